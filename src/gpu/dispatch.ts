// Dispatch geometry shared by the kernels.

/**
 * Spread `count` workgroups over x and y when one dimension cannot hold them
 * (maxComputeWorkgroupsPerDimension, 65535 by default); kernels flatten them as wid.y * nwg.x + wid.x
 * and skip the few past `count`.
 */
export function workgroupGrid(count: number, maxPerDimension: number): [number, number] {
  if (count <= maxPerDimension) return [count, 1];
  const gy = Math.ceil(count / maxPerDimension);
  return [Math.ceil(count / gy), gy];
}
