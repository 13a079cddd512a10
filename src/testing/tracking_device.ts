// Test support: a GPUDevice whose buffers are counted, to check that a failed load leaves nothing allocated.

/** A device whose buffers remember whether they were destroyed, to check nothing leaks. */
export function trackingDevice(device: GPUDevice) {
  const made: { label: string; destroyed: boolean }[] = [];
  const proxy = new Proxy(device, {
    get(target, prop) {
      if (prop === 'createBuffer') {
        return (desc: GPUBufferDescriptor) => {
          const buffer = target.createBuffer(desc);
          const record = { label: desc.label ?? '', destroyed: false };
          made.push(record);
          // Native calls need the real GPUBuffer, so patch its destroy rather than wrap it.
          const destroy = buffer.destroy.bind(buffer);
          buffer.destroy = () => ((record.destroyed = true), destroy());
          return buffer;
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return { device: proxy as GPUDevice, made };
}
