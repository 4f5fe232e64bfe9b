/**
 * For kernel tests: one kernel dispatched outside the engine, on its descriptor's bindings, uniforms and workgroups,
 * and a buffer read back; and the row and column sums' kernels run so.
 */
import { flattenWorkgroups, kernelCode, type KernelDef, packUniforms } from "../kernel.ts";
import { colReduce } from "./col_reduce.ts";
import { colStats } from "./col_stats.ts";
import { rowStats } from "./row_stats.ts";

/**
 * Records `def` over `buffers` (uniforms appended) into `enc`, on its descriptor's grid or on `grid` (a test's larger
 * one); returns the uniform buffer, for the caller to free.
 */
export function dispatchKernel<U extends string>(
  device: GPUDevice,
  enc: GPUCommandEncoder,
  def: KernelDef<U>,
  buffers: GPUBuffer[],
  u: Readonly<Record<U, number>>,
  grid?: readonly [number, number],
): GPUBuffer {
  const data = packUniforms(def, u);
  const ub = device.createBuffer({
    label: `${def.name}-uniforms`,
    size: data.byteLength,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(ub, 0, data);
  const module = device.createShaderModule({ label: def.name, code: kernelCode(def as KernelDef) });
  const pipeline = device.createComputePipeline({ label: def.name, layout: "auto", compute: { module } });
  const group = device.createBindGroup({
    label: def.name,
    layout: pipeline.getBindGroupLayout(0),
    entries: [...buffers, ub].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const pass = enc.beginComputePass({ label: def.name });
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(...(grid ?? flattenWorkgroups(def.workgroups(u))));
  pass.end();
  return ub;
}

/** Copies the first `bytes` of `src` after what `enc` recorded, submits, and returns them. */
export async function submitAndRead(
  device: GPUDevice,
  enc: GPUCommandEncoder,
  src: GPUBuffer,
  bytes: number,
): Promise<ArrayBuffer> {
  const read = device.createBuffer({
    label: "test-read",
    size: bytes,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  enc.copyBufferToBuffer(src, 0, read, 0, bytes);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const out = read.getMappedRange().slice(0);
  read.destroy();
  return out;
}

/** row_stats.wgsl alone: [sumSq, sum, sumAbs] per row of a rows x cols f32 matrix (one tile). */
export async function rowSums(
  device: GPUDevice,
  w: Float32Array<ArrayBuffer>,
  rows: number,
  cols: number,
): Promise<Float32Array> {
  const weight = uploaded(device, w);
  const stats = statsBuffer(device, rows);
  const enc = device.createCommandEncoder({ label: "test-row-sums" });
  const u = dispatchKernel(device, enc, rowStats, [weight, stats], { rows, cols, row0: 0 });
  const out = new Float32Array(await submitAndRead(device, enc, stats, rows * 12));
  for (const b of [weight, stats, u]) b.destroy();
  return out;
}

/** col_stats.wgsl then col_reduce.wgsl: [sumSq, sum, sumAbs] per column of a rows x cols f32 matrix (one tile). */
export async function columnSums(
  device: GPUDevice,
  w: Float32Array<ArrayBuffer>,
  rows: number,
  cols: number,
): Promise<Float32Array> {
  const blocks = Math.ceil(rows / 256);
  const weight = uploaded(device, w);
  const part = device.createBuffer({ label: "part", size: blocks * cols * 12, usage: GPUBufferUsage.STORAGE });
  const stats = statsBuffer(device, cols);
  const enc = device.createCommandEncoder({ label: "test-column-sums" });
  const u1 = dispatchKernel(device, enc, colStats, [weight, part], { rows, cols, block0: 0 });
  const u2 = dispatchKernel(device, enc, colReduce, [part, stats], { cols, blocks });
  const out = new Float32Array(await submitAndRead(device, enc, stats, cols * 12));
  for (const b of [weight, part, stats, u1, u2]) b.destroy();
  return out;
}

function uploaded(device: GPUDevice, w: Float32Array<ArrayBuffer>): GPUBuffer {
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
  const weight = device.createBuffer({ label: "w", size: w.byteLength, usage });
  device.queue.writeBuffer(weight, 0, w);
  return weight;
}

function statsBuffer(device: GPUDevice, lines: number): GPUBuffer {
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC;
  return device.createBuffer({ label: "stats", size: lines * 12, usage });
}
