// The engine's GPU steps seen from outside, for the decode benchmark: while installed, the probe
// wraps WebGPU's prototype methods in this thread (the engine's own code is untouched) and turns
// every submit into a StepRecord:
//   - dispatches and compute passes: GPUComputePassEncoder.dispatchWorkgroups(Indirect) counted per
//     command encoder (as issue 19 counted them by hand);
//   - CPU time: from the first WebGPU call after the previous submit (a queue.writeBuffer or an
//     encoder method: the step's uniform writes and its recording) to the end of the submit;
//   - GPU time, when given the device and it has 'timestamp-query': every compute pass gets
//     timestampWrites, and the step's GPU time is its last pass's end minus its first pass's start.
// Timestamps add work to each step, so the CPU time of a timestamped run is not the step's own;
// measure the two in separate runs (step_cost.ts does).
//
// Device methods are not wrapped: the engine's buffer ledger binds them once, so a wrapper
// installed later would never be called. Encoders, passes and the queue are plain objects.

/** The most compute passes of one step that get timestamps (2 queries each); V3's 61 layers need ~300. */
const MAX_TIMED_PASSES = 1024;

export interface StepRecord {
  dispatches: number;
  passes: number;
  /** From the step's first WebGPU call to the end of its submit. */
  cpuMs: number;
  /** First pass start to last pass end on the GPU; set once its timestamps are read (settled()). */
  gpuMs?: number;
}

export interface StepProbe {
  /** One record per queue.submit since install, in order. */
  readonly records: readonly StepRecord[];
  /** Whether passes are timestamped (a device with 'timestamp-query' was given). */
  readonly timestamps: boolean;
  /** Resolves when every timestamp read has finished (then each record has its gpuMs, where it could be read). */
  settled(): Promise<void>;
  /** Puts the original methods back. Safe to call twice. */
  uninstall(): void;
}

interface EncoderState {
  dispatches: number;
  passes: number;
  querySet?: GPUQuerySet;
  timedPasses: number;
  resolve?: GPUBuffer;
  readback?: GPUBuffer;
}

type Classes = {
  GPUCommandEncoder: { prototype: GPUCommandEncoder };
  GPUComputePassEncoder: { prototype: GPUComputePassEncoder };
  GPUQueue: { prototype: GPUQueue };
};

let installed = false;

export function installStepProbe(options: { device?: GPUDevice } = {}): StepProbe {
  const classes = globalThis as unknown as Partial<Classes>;
  if (!classes.GPUCommandEncoder || !classes.GPUComputePassEncoder || !classes.GPUQueue) {
    throw new Error("the step probe needs WebGPU's classes as globals (a browser, or Node after the GPU was opened)");
  }
  if (installed) throw new Error('a step probe is already installed in this thread');
  installed = true;
  const encoderProto = classes.GPUCommandEncoder.prototype;
  const passProto = classes.GPUComputePassEncoder.prototype;
  const queueProto = classes.GPUQueue.prototype;
  const original = {
    beginComputePass: encoderProto.beginComputePass,
    copyBufferToBuffer: encoderProto.copyBufferToBuffer,
    clearBuffer: encoderProto.clearBuffer,
    finish: encoderProto.finish,
    dispatchWorkgroups: passProto.dispatchWorkgroups,
    dispatchWorkgroupsIndirect: passProto.dispatchWorkgroupsIndirect,
    writeBuffer: queueProto.writeBuffer,
    submit: queueProto.submit,
  };
  const device = options.device;
  const timestamps = device !== undefined && device.features.has('timestamp-query');
  const records: StepRecord[] = [];
  const reads: Promise<void>[] = [];
  const encoders = new WeakMap<GPUCommandEncoder, EncoderState>();
  const passes = new WeakMap<GPUComputePassEncoder, EncoderState>();
  const buffers = new WeakMap<GPUCommandBuffer, EncoderState>();
  let stepStart: number | undefined;

  const touch = () => void (stepStart ??= performance.now());
  const stateOf = (encoder: GPUCommandEncoder) => {
    let state = encoders.get(encoder);
    if (!state) encoders.set(encoder, (state = { dispatches: 0, passes: 0, timedPasses: 0 }));
    return state;
  };

  encoderProto.beginComputePass = function (this: GPUCommandEncoder, descriptor?: GPUComputePassDescriptor) {
    touch();
    const state = stateOf(this);
    state.passes++;
    let d = descriptor;
    if (timestamps && device && !descriptor?.timestampWrites && state.timedPasses < MAX_TIMED_PASSES) {
      state.querySet ??= device.createQuerySet({ type: 'timestamp', count: 2 * MAX_TIMED_PASSES });
      const i = state.timedPasses++;
      d = { ...descriptor, timestampWrites: { querySet: state.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } };
    }
    const pass = original.beginComputePass.call(this, d);
    passes.set(pass, state);
    return pass;
  };
  encoderProto.copyBufferToBuffer = function (this: GPUCommandEncoder, ...args: unknown[]) {
    touch();
    stateOf(this);
    return (original.copyBufferToBuffer as (...a: unknown[]) => void).apply(this, args);
  } as GPUCommandEncoder['copyBufferToBuffer'];
  encoderProto.clearBuffer = function (this: GPUCommandEncoder, ...args: Parameters<GPUCommandEncoder['clearBuffer']>) {
    touch();
    stateOf(this);
    return original.clearBuffer.apply(this, args);
  };
  encoderProto.finish = function (this: GPUCommandEncoder, descriptor?: GPUCommandBufferDescriptor) {
    const state = stateOf(this);
    if (state.querySet && device) {
      const bytes = 16 * state.timedPasses;
      state.resolve = device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      state.readback = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      this.resolveQuerySet(state.querySet, 0, 2 * state.timedPasses, state.resolve, 0);
      original.copyBufferToBuffer.call(this, state.resolve, 0, state.readback, 0, bytes);
    }
    const buffer = original.finish.call(this, descriptor);
    buffers.set(buffer, state);
    return buffer;
  };
  passProto.dispatchWorkgroups = function (this: GPUComputePassEncoder, ...args: Parameters<GPUComputePassEncoder['dispatchWorkgroups']>) {
    const state = passes.get(this);
    if (state) state.dispatches++;
    return original.dispatchWorkgroups.apply(this, args);
  };
  passProto.dispatchWorkgroupsIndirect = function (this: GPUComputePassEncoder, ...args: Parameters<GPUComputePassEncoder['dispatchWorkgroupsIndirect']>) {
    const state = passes.get(this);
    if (state) state.dispatches++;
    return original.dispatchWorkgroupsIndirect.apply(this, args);
  };
  queueProto.writeBuffer = function (this: GPUQueue, ...args: unknown[]) {
    touch();
    return (original.writeBuffer as (...a: unknown[]) => void).apply(this, args);
  } as GPUQueue['writeBuffer'];
  queueProto.submit = function (this: GPUQueue, commandBuffers: Iterable<GPUCommandBuffer>) {
    const list = [...commandBuffers];
    const started = stepStart ?? performance.now();
    const result = original.submit.call(this, list);
    const record: StepRecord = { dispatches: 0, passes: 0, cpuMs: performance.now() - started };
    stepStart = undefined;
    for (const buffer of list) {
      const state = buffers.get(buffer);
      if (!state) continue;
      record.dispatches += state.dispatches;
      record.passes += state.passes;
      if (state.readback) reads.push(readSpan(state, record));
    }
    records.push(record);
    return result;
  };

  return {
    records,
    timestamps,
    async settled() {
      await Promise.all(reads);
    },
    uninstall() {
      if (encoderProto.finish !== original.finish) {
        Object.assign(encoderProto, { beginComputePass: original.beginComputePass, copyBufferToBuffer: original.copyBufferToBuffer, clearBuffer: original.clearBuffer, finish: original.finish });
        Object.assign(passProto, { dispatchWorkgroups: original.dispatchWorkgroups, dispatchWorkgroupsIndirect: original.dispatchWorkgroupsIndirect });
        Object.assign(queueProto, { writeBuffer: original.writeBuffer, submit: original.submit });
        installed = false;
      }
    },
  };
}

/** Reads a step's timestamps: the span from the earliest pass start to the latest pass end. */
async function readSpan(state: EncoderState, record: StepRecord): Promise<void> {
  const buffer = state.readback!;
  try {
    await buffer.mapAsync(GPUMapMode.READ);
    const times = new BigUint64Array(buffer.getMappedRange().slice(0));
    buffer.unmap();
    let first: bigint | undefined;
    let last: bigint | undefined;
    for (let i = 0; i + 1 < times.length; i += 2) {
      const [begin, end] = [times[i], times[i + 1]];
      if (begin === 0n || end < begin) continue; // a pass the adapter did not time
      if (first === undefined || begin < first) first = begin;
      if (last === undefined || end > last) last = end;
    }
    // A zero span means the adapter quantised the timestamps away: leave gpuMs unset.
    if (first !== undefined && last !== undefined && last > first) record.gpuMs = Number(last - first) / 1e6;
  } finally {
    buffer.destroy();
    state.resolve?.destroy();
    state.querySet?.destroy();
  }
}
