// Record prepared kernel calls into one compute pass and submit it: for tests, benchmarks and
// one-off checks (a forward pass records its whole step into one encoder instead).

export interface Encodable {
  encode(pass: GPUComputePassEncoder): void;
}

export function submitPass(device: GPUDevice, ...calls: Encodable[]): void {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  for (const call of calls) call.encode(pass);
  pass.end();
  device.queue.submit([encoder.finish()]);
}
