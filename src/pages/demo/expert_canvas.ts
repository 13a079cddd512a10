// What the two expert pictures (experts_heatmap.ts, expert_cache.ts) draw alike: a canvas sized
// for the screen's pixel ratio, cleared, with the page's ink and accent colours, and a header of
// expert numbers (as many as fit) over the columns.

export interface ExpertCanvas {
  ctx: CanvasRenderingContext2D;
  ink: string;
  accent: string;
}

/** Sizes `canvas` to width x height CSS pixels and clears it for drawing. */
export function prepareExpertCanvas(canvas: HTMLCanvasElement, width: number, height: number): ExpertCanvas {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext('2d')!;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const style = getComputedStyle(canvas);
  ctx.clearRect(0, 0, width, height);
  ctx.font = '10px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  return { ctx, ink: style.color, accent: style.getPropertyValue('--accent').trim() || '#2563eb' };
}

/** Expert numbers centred over columns of cellW from x = gutter, in a header `height` tall. */
export function drawExpertNumbers({ ctx, ink }: ExpertCanvas, experts: number, gutter: number, cellW: number, height: number): void {
  ctx.fillStyle = ink;
  ctx.textAlign = 'center';
  const step = Math.max(1, Math.ceil(16 / cellW));
  for (let e = 0; e < experts; e += step) ctx.fillText(String(e), gutter + (e + 0.5) * cellW, height / 2);
}
