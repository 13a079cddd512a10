// Where onnxruntime placed the graph's nodes, read from its verbose session log (logSeverityLevel 0):
//   ... VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CPUExecutionProvider]. Number of nodes: 133
//   ... VerifyEachNodeIsAssignedToAnEp]   TopK (/TopK_3)
// A node on CPUExecutionProvider is a fall-back from the WebGPU provider (shape arithmetic, by
// ORT's own choice, or an op the provider lacks).

export interface Placement {
  /** Nodes per execution provider. */
  nodes: Record<string, number>;
  /** The CPU provider's nodes, counted by op type, most first. */
  cpuOps: [op: string, count: number][];
}

export function parsePlacement(log: readonly string[]): Placement {
  const nodes: Record<string, number> = {};
  const cpu = new Map<string, number>();
  let provider: string | undefined;
  for (const line of log) {
    const header = /Node\(s\) placed on \[(\w+)\]\. Number of nodes: (\d+)/.exec(line);
    if (header) {
      provider = header[1];
      nodes[provider] = Number(header[2]);
      continue;
    }
    const node = /VerifyEachNodeIsAssignedToAnEp\]\s+(\w+) \(/.exec(line);
    if (node && provider === 'CPUExecutionProvider') cpu.set(node[1], (cpu.get(node[1]) ?? 0) + 1);
    else if (!node) provider = undefined;
  }
  return { nodes, cpuOps: [...cpu].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])) };
}

/** "630 nodes on JsExecutionProvider, 133 on CPUExecutionProvider (Concat 28, TopK 12, …)". */
export function placementText(p: Placement): string {
  const entries = Object.entries(p.nodes);
  if (entries.length === 0) return 'onnxruntime-web logged no node placement';
  return entries.map(([ep, n], i) => `${n} ${i === 0 ? 'nodes ' : ''}on ${ep}${ep === 'CPUExecutionProvider' && p.cpuOps.length ? ` (${p.cpuOps.map(([op, c]) => `${op} ${c}`).join(', ')})` : ''}`).join(', ');
}
