/**
 * Writes `model/matmul.wat`: register-blocked f32 SIMD matmul kernels, out[t, j] = sum_i x[t, i] * w[j, i]
 * (x row-major (T, n), w row-major (d, n) like torch's Linear.weight, out row-major (T, d)).
 * `matmul_RxC` handles rows [0, T - T % R) and columns [0, d - d % C); the caller finishes the tails.
 * n must be a multiple of 4.
 *
 * Regenerate (wabt is a build-time tool only, not a dependency):
 *   deno run -A model/_gen_matmul_wat.ts                      # writes model/matmul.wat
 *   npx --yes --package=wabt@1.0.39 wat2wasm model/matmul.wat -o /tmp/matmul.wasm
 *   deno run -A model/_gen_matmul_wat.ts /tmp/matmul.wasm     # also embeds it as model/_matmul_wasm.ts (base64)
 */
/**
 * Appends what opens both kernels' j step: the t and j loops, the rows' pointers (w's rows `wStride` bytes apart) and
 * the zeroed accumulators.
 */
function openJStep(L: string[], R: number, C: number, wStride: "$nb" | "$hb"): void {
  L.push(`    (local.set $t (i32.const 0))`);
  L.push(`    (block $tend (loop $tloop`);
  L.push(`      (br_if $tend (i32.gt_s (i32.add (local.get $t) (i32.const ${R})) (local.get $T)))`);
  L.push(`      (local.set $xb (i32.add (local.get $x) (i32.mul (local.get $t) (local.get $nb))))`);
  L.push(`      (local.set $j (i32.const 0))`);
  L.push(`      (block $jend (loop $jloop`);
  L.push(`        (br_if $jend (i32.gt_s (i32.add (local.get $j) (i32.const ${C})) (local.get $d)))`);
  L.push(`        (local.set $wb (i32.add (local.get $w) (i32.mul (local.get $j) (local.get ${wStride}))))`);
  for (let r = 0; r < R; r++) {
    L.push(`        (local.set $x${r} (i32.add (local.get $xb) (i32.mul (i32.const ${r}) (local.get $nb))))`);
  }
  for (let c = 0; c < C; c++) {
    L.push(`        (local.set $w${c} (i32.add (local.get $wb) (i32.mul (i32.const ${c}) (local.get ${wStride}))))`);
  }
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) L.push(`        (local.set $c${r}${c} (v128.const i32x4 0 0 0 0))`);
  }
}

/**
 * Appends what ends both kernels' j step: each accumulator summed across its lanes into out[t + r, j + c], then the
 * j and t loops advanced and closed.
 */
function storeAndClose(L: string[], R: number, C: number): void {
  for (let r = 0; r < R; r++) {
    L.push(
      `        (local.set $o (i32.add (local.get $out) (i32.shl (i32.add (i32.mul ` +
        `(i32.add (local.get $t) (i32.const ${r})) (local.get $d)) (local.get $j)) (i32.const 2))))`,
    );
    for (let c = 0; c < C; c++) {
      const v = `(local.get $c${r}${c})`;
      L.push(
        `        (f32.store offset=${c * 4} (local.get $o) ` +
          `(f32.add (f32.add (f32x4.extract_lane 0 ${v}) (f32x4.extract_lane 1 ${v})) ` +
          `(f32.add (f32x4.extract_lane 2 ${v}) (f32x4.extract_lane 3 ${v}))))`,
      );
    }
  }
  L.push(`        (local.set $j (i32.add (local.get $j) (i32.const ${C})))`);
  L.push(`        (br $jloop)))`);
  L.push(`      (local.set $t (i32.add (local.get $t) (i32.const ${R})))`);
  L.push(`      (br $tloop)))`);
  L.push(`  )`);
}

function kernel(R: number, C: number): string {
  const L: string[] = [];
  const locals = [
    "(local $t i32) (local $j i32) (local $i i32) (local $nb i32) (local $xb i32) (local $wb i32) (local $o i32)",
  ];
  for (let r = 0; r < R; r++) locals.push(`(local $x${r} i32) (local $a${r} v128)`);
  for (let c = 0; c < C; c++) locals.push(`(local $w${c} i32) (local $b${c} v128)`);
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) locals.push(`(local $c${r}${c} v128)`);
  L.push(
    `  ;; ${R} rows of x times ${C} rows of w per step; ${R * C} f32x4 accumulators, summed across lanes at the end.`,
  );
  L.push(
    `  (func (export "matmul_${R}x${C}") (param $out i32) (param $x i32) (param $w i32) ` +
      `(param $T i32) (param $n i32) (param $d i32)`,
  );
  L.push("    " + locals.join(" "));
  L.push(`    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))`);
  openJStep(L, R, C, "$nb");
  L.push(`        (local.set $i (i32.const 0))`);
  L.push(`        (block $iend (loop $iloop`);
  L.push(`          (br_if $iend (i32.ge_u (local.get $i) (local.get $nb)))`);
  for (let r = 0; r < R; r++) {
    L.push(`          (local.set $a${r} (v128.load (i32.add (local.get $x${r}) (local.get $i))))`);
  }
  for (let c = 0; c < C; c++) {
    L.push(`          (local.set $b${c} (v128.load (i32.add (local.get $w${c}) (local.get $i))))`);
    for (let r = 0; r < R; r++) {
      L.push(
        `          (local.set $c${r}${c} (f32x4.add (local.get $c${r}${c}) ` +
          `(f32x4.mul (local.get $a${r}) (local.get $b${c}))))`,
      );
    }
  }
  L.push(`          (local.set $i (i32.add (local.get $i) (i32.const 16)))`);
  L.push(`          (br $iloop)))`);
  storeAndClose(L, R, C);
  return L.join("\n");
}

/** The f32x4 of the low or high four 16-bit weights of `h` (an expression of 8 halves), widened exactly. */
function widen(kind: "bf16" | "f16", half: "low" | "high", h: string): string {
  // bf16 is the top half of a float32.
  if (kind === "bf16") return `(i32x4.shl (i32x4.extend_${half}_i16x8_u ${h}) (i32.const 16))`;
  // f16, in four operations: sign-extended and shifted left 13, the sign is bit 31 (and 28-30, cleared), exponent and
  // mantissa sit in float32's places; the multiply by 2^112 rebiases the exponent (15 to 127), keeps the sign and makes
  // subnormals exact too. Finite values only: infinity would read 65536 (the loader decodes a matrix that holds one to
  // float32 instead).
  return `(f32x4.mul (v128.and (i32x4.shl (i32x4.extend_${half}_i16x8_s ${h}) (i32.const 13)) ` +
    `(v128.const i32x4 0x8fffe000 0x8fffe000 0x8fffe000 0x8fffe000)) ` +
    `(v128.const f32x4 0x1p112 0x1p112 0x1p112 0x1p112))`;
}

/**
 * `matmul_RxC_KIND`: the same product with 16-bit weights (bf16 or f16), widened exactly to float32 in registers. Eight
 * elements a step, the low four then the high four into the same accumulators: the f32 kernel's two steps, so the
 * same sums in the same order, bit for bit. n % 4 == 0; a last group of four (n % 8 == 4) is a step of its own.
 */
function kernel16(R: number, C: number, kind: "bf16" | "f16"): string {
  const L: string[] = [];
  const locals = [
    "(local $t i32) (local $j i32) (local $i i32) (local $nb i32) (local $hb i32) (local $xb i32) (local $wb i32)",
    "(local $o i32) (local $h v128)",
  ];
  for (let r = 0; r < R; r++) locals.push(`(local $x${r} i32) (local $a${r} v128)`);
  for (let c = 0; c < C; c++) locals.push(`(local $w${c} i32) (local $b${c} v128)`);
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) locals.push(`(local $c${r}${c} v128)`);
  L.push(`  ;; ${R} rows of x times ${C} rows of ${kind} w per step, widened in registers; as matmul_${R}x${C}.`);
  L.push(
    `  (func (export "matmul_${R}x${C}_${kind}") (param $out i32) (param $x i32) (param $w i32) ` +
      `(param $T i32) (param $n i32) (param $d i32)`,
  );
  L.push("    " + locals.join(" "));
  L.push(`    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))`);
  L.push(`    (local.set $hb (i32.shl (local.get $n) (i32.const 1)))`);
  openJStep(L, R, C, "$hb");
  // One group of four: x's floats at byte $i (+ xOff), w's halves at byte $i / 2 (+ wOff), widened from `half`.
  const group = (indent: string, xOff: number, wOff: number, half: "low" | "high", load: string) => {
    for (let r = 0; r < R; r++) {
      L.push(`${indent}(local.set $a${r} (v128.load offset=${xOff} (i32.add (local.get $x${r}) (local.get $i))))`);
    }
    for (let c = 0; c < C; c++) {
      L.push(
        `${indent}(local.set $h (${load} offset=${wOff} (i32.add (local.get $w${c}) ` +
          `(i32.shr_u (local.get $i) (i32.const 1)))))`,
      );
      L.push(`${indent}(local.set $b${c} ${widen(kind, half, "(local.get $h)")})`);
      for (let r = 0; r < R; r++) {
        L.push(
          `${indent}(local.set $c${r}${c} (f32x4.add (local.get $c${r}${c}) ` +
            `(f32x4.mul (local.get $a${r}) (local.get $b${c}))))`,
        );
      }
    }
  };
  L.push(`        (local.set $i (i32.const 0))`);
  L.push(`        (block $iend (loop $iloop`);
  L.push(`          (br_if $iend (i32.gt_u (i32.add (local.get $i) (i32.const 32)) (local.get $nb)))`);
  group("          ", 0, 0, "low", "v128.load");
  group("          ", 16, 0, "high", "v128.load");
  L.push(`          (local.set $i (i32.add (local.get $i) (i32.const 32)))`);
  L.push(`          (br $iloop)))`);
  L.push(`        (if (i32.lt_u (local.get $i) (local.get $nb)) (then`);
  group("          ", 0, 0, "low", "v128.load64_zero");
  L.push(`        ))`);
  storeAndClose(L, R, C);
  return L.join("\n");
}

const wat = [
  ";; Generated by model/_gen_matmul_wat.ts; do not edit by hand.",
  ";; out[t, j] = sum_i x[t, i] * w[j, i]; pointers are byte offsets into the imported memory; n % 4 == 0.",
  ";; 3x4 blocking measured fastest on x86-64 (12 accumulators + 4 operands fit the 16 SIMD registers).",
  "(module",
  '  (memory (import "env" "memory") 1 65536)',
  kernel(3, 4),
  kernel(1, 4),
  kernel16(3, 4, "bf16"),
  kernel16(1, 4, "bf16"),
  kernel16(3, 4, "f16"),
  kernel16(1, 4, "f16"),
  ")",
  "",
].join("\n");
await Deno.writeTextFile(new URL("./matmul.wat", import.meta.url), wat);
if (Deno.args[0] !== undefined) {
  const bytes = await Deno.readFile(Deno.args[0]);
  const b64 = btoa(String.fromCharCode(...bytes));
  await Deno.writeTextFile(
    new URL("./_matmul_wasm.ts", import.meta.url),
    `/** model/matmul.wat compiled by wabt 1.0.39's wat2wasm, base64; regenerate with model/_gen_matmul_wat.ts. */\n` +
      `export const MATMUL_WASM_BASE64 =\n  "${b64}";\n`,
  );
}
