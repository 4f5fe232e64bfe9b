/** Prints whether this runtime's own allocation failure, and a RangeError of another kind, are recognised. */
import { isAllocationFailure } from "../out_of_memory.ts";

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return null;
}

console.log(JSON.stringify({
  buffer: isAllocationFailure(thrown(() => new ArrayBuffer(2 ** 45))),
  shared: isAllocationFailure(thrown(() => new SharedArrayBuffer(2 ** 45))),
  typed: isAllocationFailure(thrown(() => new Float32Array(2 ** 43))),
  otherRange: isAllocationFailure(thrown(() => new Array(-1))),
}));
