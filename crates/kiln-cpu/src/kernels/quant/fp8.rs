//! FP8 conversions by hand (ONNX's E4M3FN and E5M2), round-to-nearest-even.
//!
//! E4M3FN: bias 7, 3 mantissa bits, no infinities, NaN = S.1111.111, max 448.
//! E5M2: bias 15, 2 mantissa bits, IEEE-like infinities and NaNs, max 57344.

use kiln_ir::DType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fp8 {
    E4M3FN,
    E5M2,
}

impl Fp8 {
    pub fn of(dtype: DType) -> Option<Fp8> {
        match dtype {
            DType::F8E4M3FN => Some(Fp8::E4M3FN),
            DType::F8E5M2 => Some(Fp8::E5M2),
            _ => None,
        }
    }

    fn mantissa_bits(self) -> i32 {
        match self {
            Fp8::E4M3FN => 3,
            Fp8::E5M2 => 2,
        }
    }

    fn bias(self) -> i32 {
        match self {
            Fp8::E4M3FN => 7,
            Fp8::E5M2 => 15,
        }
    }

    /// Largest finite value and its bits (without sign).
    fn max(self) -> (f64, u8) {
        match self {
            Fp8::E4M3FN => (448.0, 0x7E),
            Fp8::E5M2 => (57344.0, 0x7B),
        }
    }

    const NAN: u8 = 0x7F;

    /// Bits for an overflow (a too large finite value or an infinity) without saturation.
    fn overflow(self) -> u8 {
        match self {
            Fp8::E4M3FN => Self::NAN,
            Fp8::E5M2 => 0x7C,
        }
    }

    pub fn decode(self, bits: u8) -> f32 {
        let sign = if bits & 0x80 != 0 { -1.0f32 } else { 1.0 };
        let m_bits = self.mantissa_bits();
        let exp = ((bits & 0x7F) >> m_bits) as i32;
        let man = (bits & ((1 << m_bits) - 1)) as i32;
        let max_exp = (1 << (7 - m_bits)) - 1;
        match self {
            Fp8::E4M3FN if exp == max_exp && man == (1 << m_bits) - 1 => return f32::NAN,
            Fp8::E5M2 if exp == max_exp => return if man == 0 { sign * f32::INFINITY } else { f32::NAN },
            _ => {}
        }
        let value = if exp == 0 {
            man as f32 * 2f32.powi(1 - self.bias() - m_bits)
        } else {
            (man + (1 << m_bits)) as f32 * 2f32.powi(exp - self.bias() - m_bits)
        };
        sign * value
    }

    /// Rounds `x` to nearest even; out-of-range values saturate to the largest finite
    /// value when `saturate`, else become NaN (E4M3FN) or infinity (E5M2).
    pub fn encode(self, x: f64, saturate: bool) -> u8 {
        let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
        if x.is_nan() {
            return Self::NAN | sign;
        }
        let (max, max_bits) = self.max();
        let a = x.abs();
        let overflow = if saturate { max_bits } else { self.overflow() };
        if a.is_infinite() {
            return overflow | sign;
        }
        if a == 0.0 {
            return sign;
        }
        let m_bits = self.mantissa_bits();
        let emin = 1 - self.bias();
        let e = exponent(a).max(emin);
        let quantum = 2f64.powi(e - m_bits);
        let q = (a / quantum).round_ties_even() * quantum;
        if q > max {
            return overflow | sign;
        }
        if q == 0.0 {
            return sign;
        }
        let e2 = exponent(q);
        let bits = if e2 < emin {
            (q / 2f64.powi(emin - m_bits)) as u8
        } else {
            let man = (q / 2f64.powi(e2 - m_bits)) as i32 - (1 << m_bits);
            (((e2 + self.bias()) << m_bits) | man) as u8
        };
        bits | sign
    }
}

/// floor(log2(a)) for a positive finite normal f64.
fn exponent(a: f64) -> i32 {
    ((a.to_bits() >> 52) & 0x7FF) as i32 - 1023
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_codes() {
        for f in [Fp8::E4M3FN, Fp8::E5M2] {
            for b in 0..=255u8 {
                let v = f.decode(b);
                if v.is_nan() {
                    continue;
                }
                assert_eq!(f.encode(v as f64, false), b, "{f:?} {b:#x} {v}");
            }
        }
    }

    #[test]
    fn saturation_and_ties() {
        assert_eq!(Fp8::E4M3FN.encode(1e6, true), 0x7E);
        assert_eq!(Fp8::E4M3FN.encode(1e6, false), 0x7F);
        assert_eq!(Fp8::E5M2.encode(f64::NEG_INFINITY, false), 0xFC);
        assert_eq!(Fp8::E5M2.encode(f64::NEG_INFINITY, true), 0xFB);
        // 1.0625 is halfway between 1.0 and 1.125 in E4M3FN: ties to even (1.0).
        assert_eq!(Fp8::E4M3FN.decode(Fp8::E4M3FN.encode(1.0625, true)), 1.0);
        assert_eq!(Fp8::E4M3FN.decode(Fp8::E4M3FN.encode(1.1875, true)), 1.25);
    }
}
