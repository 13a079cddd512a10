import { describe, expect, it } from 'vitest';
import { parsePlacement, placementText } from './peer_placement.ts';

const at = '2026-12-03 18:44:07.746099 [V:onnxruntime:, session_state.cc:1584 VerifyEachNodeIsAssignedToAnEp]';
const LOG = [
  `${at}  Node(s) placed on [JsExecutionProvider]. Number of nodes: 3`,
  `${at}   MatMul (/MatMul)`,
  `${at}   TopK (/TopK_9)`,
  `${at}   Add (/Add)`,
  `${at}  Node(s) placed on [CPUExecutionProvider]. Number of nodes: 3`,
  `${at}   TopK (/TopK)`,
  `${at}   Shape (/Shape)`,
  `${at}   TopK (/TopK_1)`,
  '2026-12-03 18:44:08.1 [W:onnxruntime:, session_state.cc:1598 VerifyEachNodeIsAssignedToAnEp] Some nodes were not assigned to the preferred execution providers',
];

describe('parsePlacement', () => {
  it('counts nodes per provider and the CPU fall-back by op', () => {
    const p = parsePlacement(LOG);
    expect(p).toEqual({ nodes: { JsExecutionProvider: 3, CPUExecutionProvider: 3 }, cpuOps: [['TopK', 2], ['Shape', 1]] });
    expect(placementText(p)).toBe('3 nodes on JsExecutionProvider, 3 on CPUExecutionProvider (TopK 2, Shape 1)');
  });
  it('says when the log had no placement', () => {
    expect(placementText(parsePlacement(['nothing']))).toBe('onnxruntime-web logged no node placement');
  });
});
