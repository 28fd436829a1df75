use std::fmt;

/// Element types Kiln knows. FP8 and bool are storage types (one byte each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    Bool,
    F8E4M3FN,
    F8E5M2,
}

impl DType {
    pub const ALL: [DType; 15] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::Bool,
        DType::F8E4M3FN,
        DType::F8E5M2,
    ];

    pub fn size(self) -> usize {
        use DType::*;
        match self {
            F64 | I64 | U64 => 8,
            F32 | I32 | U32 => 4,
            F16 | BF16 | I16 | U16 => 2,
            I8 | U8 | Bool | F8E4M3FN | F8E5M2 => 1,
        }
    }

    pub fn is_float(self) -> bool {
        use DType::*;
        matches!(self, F32 | F16 | BF16 | F64 | F8E4M3FN | F8E5M2)
    }

    pub fn is_integer(self) -> bool {
        use DType::*;
        matches!(self, I8 | U8 | I16 | U16 | I32 | U32 | I64 | U64)
    }

    pub fn is_signed(self) -> bool {
        use DType::*;
        matches!(self, I8 | I16 | I32 | I64) || self.is_float()
    }

    /// The ONNX `TensorProto.DataType` number of this type.
    pub fn onnx_id(self) -> i32 {
        use DType::*;
        match self {
            F32 => 1,
            U8 => 2,
            I8 => 3,
            U16 => 4,
            I16 => 5,
            I32 => 6,
            I64 => 7,
            Bool => 9,
            F16 => 10,
            F64 => 11,
            U32 => 12,
            U64 => 13,
            BF16 => 16,
            F8E4M3FN => 17,
            F8E5M2 => 19,
        }
    }

    /// The dtype for an ONNX `TensorProto.DataType` number, if Kiln supports it.
    pub fn from_onnx_id(id: i32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.onnx_id() == id)
    }

    pub fn name(self) -> &'static str {
        use DType::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            BF16 => "bf16",
            F64 => "f64",
            I8 => "i8",
            U8 => "u8",
            I16 => "i16",
            U16 => "u16",
            I32 => "i32",
            U32 => "u32",
            I64 => "i64",
            U64 => "u64",
            Bool => "bool",
            F8E4M3FN => "f8e4m3fn",
            F8E5M2 => "f8e5m2",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;

    /// The inverse of `Display` ("f32", "i64", ...).
    fn from_str(s: &str) -> Result<DType, String> {
        DType::ALL.into_iter().find(|d| d.name() == s).ok_or_else(|| format!("no dtype named '{s}'"))
    }
}
