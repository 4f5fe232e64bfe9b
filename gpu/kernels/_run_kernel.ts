/**
 * For kernel tests: one kernel dispatched outside the engine, on its descriptor's bindings, uniforms and workgroups,
 * and a buffer read back.
 */
import { flattenWorkgroups, kernelCode, type KernelDef, packUniforms } from "../kernel.ts";

/** Records `def` over `buffers` (uniforms appended) into `enc`; returns the uniform buffer, for the caller to free. */
export function dispatchKernel<U extends string>(
  device: GPUDevice,
  enc: GPUCommandEncoder,
  def: KernelDef<U>,
  buffers: GPUBuffer[],
  u: Readonly<Record<U, number>>,
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
  pass.dispatchWorkgroups(...flattenWorkgroups(def.workgroups(u)));
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
