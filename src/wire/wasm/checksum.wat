;; RFC 1071 one's-complement sum over bytes in linear memory, two ways.
;; Both sum little-endian words (byte-order independence, RFC 1071 §2(B)) and return
;; the 16-bit folded sum already swapped back to network order. Build: wat2wasm.
(module
  (memory (export "memory") 2)

  ;; fold an i64 of 16-bit-word sums to 16 bits and byte-swap to big-endian
  (func $finish (param $s i64) (result i32)
    (local $r i32)
    ;; fold 64 -> 32 -> 16 with end-around carry
    (local.set $s (i64.add (i64.and (local.get $s) (i64.const 0xffffffff)) (i64.shr_u (local.get $s) (i64.const 32))))
    (local.set $s (i64.add (i64.and (local.get $s) (i64.const 0xffffffff)) (i64.shr_u (local.get $s) (i64.const 32))))
    (local.set $r (i32.wrap_i64 (local.get $s)))
    (local.set $r (i32.add (i32.and (local.get $r) (i32.const 0xffff)) (i32.shr_u (local.get $r) (i32.const 16))))
    (local.set $r (i32.add (i32.and (local.get $r) (i32.const 0xffff)) (i32.shr_u (local.get $r) (i32.const 16))))
    (i32.or (i32.shr_u (local.get $r) (i32.const 8)) (i32.and (i32.shl (local.get $r) (i32.const 8)) (i32.const 0xff00))))

  ;; sum of the < 8 trailing bytes as LE 16-bit words (odd last byte is a low byte)
  (func $tail (param $p i32) (param $end i32) (result i64)
    (local $s i64)
    (block $done
      (loop $l
        (br_if $done (i32.gt_u (i32.add (local.get $p) (i32.const 2)) (local.get $end)))
        (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (i32.load16_u (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (i32.const 2)))
        (br $l)))
    (if (i32.lt_u (local.get $p) (local.get $end))
      (then (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (i32.load8_u (local.get $p)))))))
    (local.get $s))

  ;; scalar: 8 bytes per step, split into two u32 halves added to an i64
  (func (export "sum_scalar") (param $p i32) (param $n i32) (result i32)
    (local $end i32) (local $s i64) (local $w i64)
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (block $done
      (loop $l
        (br_if $done (i32.gt_u (i32.add (local.get $p) (i32.const 8)) (local.get $end)))
        (local.set $w (i64.load (local.get $p)))
        (local.set $s (i64.add (local.get $s)
          (i64.add (i64.and (local.get $w) (i64.const 0xffffffff)) (i64.shr_u (local.get $w) (i64.const 32)))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $l)))
    (call $finish (i64.add (local.get $s) (call $tail (local.get $p) (local.get $end)))))

  ;; SIMD: 32 bytes per step; pairwise-widen u16 lanes to u32 lanes. A u32 lane gains at most
  ;; 2*131070 per step, so lanes are flushed into an i64 every 8192 steps (256 KiB), well before overflow.
  (func (export "sum_simd") (param $p i32) (param $n i32) (result i32)
    (local $end i32) (local $s i64) (local $acc v128) (local $k i32)
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (block $outer_done
      (loop $outer
        (br_if $outer_done (i32.gt_u (i32.add (local.get $p) (i32.const 32)) (local.get $end)))
        (local.set $acc (v128.const i64x2 0 0))
        (local.set $k (i32.const 8192))
        (block $inner_done
          (loop $inner
            (br_if $inner_done (i32.eqz (local.get $k)))
            (br_if $inner_done (i32.gt_u (i32.add (local.get $p) (i32.const 32)) (local.get $end)))
            (local.set $acc (i32x4.add (local.get $acc) (i32x4.add
              (i32x4.extadd_pairwise_i16x8_u (v128.load (local.get $p)))
              (i32x4.extadd_pairwise_i16x8_u (v128.load offset=16 (local.get $p))))))
            (local.set $p (i32.add (local.get $p) (i32.const 32)))
            (local.set $k (i32.sub (local.get $k) (i32.const 1)))
            (br $inner)))
        (local.set $s (i64.add (local.get $s) (i64.add
          (i64.add (i64.extend_i32_u (i32x4.extract_lane 0 (local.get $acc))) (i64.extend_i32_u (i32x4.extract_lane 1 (local.get $acc))))
          (i64.add (i64.extend_i32_u (i32x4.extract_lane 2 (local.get $acc))) (i64.extend_i32_u (i32x4.extract_lane 3 (local.get $acc)))))))
        (br $outer)))
    ;; remaining < 32 bytes: 4 at a time, then the tail
    (block $d2
      (loop $l2
        (br_if $d2 (i32.gt_u (i32.add (local.get $p) (i32.const 4)) (local.get $end)))
        (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (i32.load16_u (local.get $p)))))
        (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (i32.load16_u offset=2 (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $l2)))
    (call $finish (i64.add (local.get $s) (call $tail (local.get $p) (local.get $end)))))
)
