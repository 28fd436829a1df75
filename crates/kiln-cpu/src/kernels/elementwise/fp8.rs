//! FP8 (OCP E4M3FN and E5M2) encoding and decoding by hand, round-to-nearest-even,
//! with ONNX's `saturate` rules for out-of-range values.

/// An 8-bit float layout: 1 sign bit, `exp_bits` exponent bits, `man_bits` mantissa bits.
#[derive(Clone, Copy, Debug)]
pub struct Fp8 {
    man_bits: i32,
    bias: i32,
    /// Largest finite value and its code (positive).
    max: f64,
    max_code: u8,
    /// Code for +infinity; E4M3FN has none.
    inf_code: Option<u8>,
    nan_code: u8,
}

/// E4M3FN: no infinities; 0x7F / 0xFF are NaN; max 448.
pub const E4M3FN: Fp8 = Fp8 { man_bits: 3, bias: 7, max: 448.0, max_code: 0x7E, inf_code: None, nan_code: 0x7F };
/// E5M2: IEEE-like, with infinities (0x7C) and NaNs (ONNX writes 0x7E); max 57344.
pub const E5M2: Fp8 = Fp8 { man_bits: 2, bias: 15, max: 57344.0, max_code: 0x7B, inf_code: Some(0x7C), nan_code: 0x7E };

impl Fp8 {
    pub fn encode(&self, v: f64, saturate: bool) -> u8 {
        let sign = if v.is_sign_negative() { 0x80 } else { 0 };
        if v.is_nan() {
            return sign | self.nan_code;
        }
        let a = v.abs();
        let overflow = || match (saturate, self.inf_code) {
            (true, _) => sign | self.max_code,
            (false, Some(inf)) => sign | inf,
            (false, None) => sign | self.nan_code,
        };
        if a.is_infinite() {
            return overflow();
        }
        if a == 0.0 {
            return sign;
        }
        // Quantise to a multiple of the spacing at a's exponent (never below the
        // subnormal spacing); the division and product by a power of two are exact.
        let min_exp = 1 - self.bias;
        let e = exponent(a).max(min_exp);
        let quantum = pow2(e - self.man_bits);
        let r = (a / quantum).round_ties_even() * quantum;
        if r > self.max {
            return overflow();
        }
        if r == 0.0 {
            return sign;
        }
        let e = exponent(r);
        let code = if e < min_exp {
            (r / pow2(min_exp - self.man_bits)) as u32
        } else {
            let mant = (r / pow2(e - self.man_bits)) as u32 - (1 << self.man_bits);
            (((e + self.bias) as u32) << self.man_bits) | mant
        };
        sign | code as u8
    }

    pub fn decode(&self, b: u8) -> f32 {
        let sign: f64 = if b & 0x80 != 0 { -1.0 } else { 1.0 };
        let bits = b & 0x7F;
        if bits == self.nan_code || (self.inf_code.is_some() && bits > 0x7C) {
            return f32::NAN;
        }
        if Some(bits) == self.inf_code {
            return (sign * f64::INFINITY) as f32;
        }
        let man = (bits as i32) & ((1 << self.man_bits) - 1);
        let exp = (bits as i32) >> self.man_bits;
        let v = if exp == 0 {
            man as f64 * pow2(1 - self.bias - self.man_bits)
        } else {
            (((1 << self.man_bits) + man) as f64) * pow2(exp - self.bias - self.man_bits)
        };
        (sign * v) as f32
    }
}

/// floor(log2(a)) for a finite positive a (subnormal f64s are far below any FP8 range).
fn exponent(a: f64) -> i32 {
    ((a.to_bits() >> 52) & 0x7FF) as i32 - 1023
}

fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3fn_roundtrip_and_rounding() {
        for b in 0u8..=255 {
            let v = E4M3FN.decode(b);
            if !v.is_nan() {
                assert_eq!(E4M3FN.encode(v as f64, false), b, "code {b:#x} value {v}");
            }
        }
        assert_eq!(E4M3FN.decode(E4M3FN.encode(464.0, false)), 448.0); // tie to even
        assert!(E4M3FN.decode(E4M3FN.encode(500.0, false)).is_nan());
        assert_eq!(E4M3FN.decode(E4M3FN.encode(f64::INFINITY, true)), 448.0);
    }

    #[test]
    fn e5m2_roundtrip_and_overflow() {
        for b in 0u8..=255 {
            let v = E5M2.decode(b);
            if !v.is_nan() {
                assert_eq!(E5M2.encode(v as f64, false), b, "code {b:#x} value {v}");
            }
        }
        assert_eq!(E5M2.decode(E5M2.encode(1e6, false)), f32::INFINITY);
        assert_eq!(E5M2.decode(E5M2.encode(-1e6, true)), -57344.0);
    }
}
