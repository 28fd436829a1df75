//! What an op converter sees of one ONNX node: its typed attributes, the facts of its
//! inputs, the opset in force, and a way to import its subgraphs.

use std::path::Path;

use kiln_ir::{DType, Fact, Graph, Tensor};

use crate::error::{OnnxError, Result};
use crate::import::{Resolver, build_graph};
use crate::proto::{AttributeProto, AttributeType, NodeProto};
use crate::tensor::{dtype_of, tensor_from_proto};

pub struct NodeCtx<'a> {
    pub proto: &'a NodeProto,
    /// Version of the opset of this node's domain that the model imports.
    pub opset: i64,
    /// Facts of the node's inputs, `None` for omitted optional inputs.
    pub inputs: Vec<Option<Fact>>,
    pub(crate) resolver: &'a mut dyn Resolver,
    pub(crate) env: &'a crate::import::ImportEnv,
}

impl<'a> NodeCtx<'a> {
    pub fn name(&self) -> &str {
        &self.proto.name
    }

    pub fn op_type(&self) -> &str {
        &self.proto.op_type
    }

    pub fn n_inputs(&self) -> usize {
        self.inputs.len()
    }

    pub fn n_outputs(&self) -> usize {
        self.proto.output.len()
    }

    /// Fact of input `i` if present.
    pub fn input(&self, i: usize) -> Option<&Fact> {
        self.inputs.get(i).and_then(Option::as_ref)
    }

    /// The constant value of input `i`, if it is present and known at import.
    pub fn const_input(&self, i: usize) -> Option<&Tensor> {
        self.input(i).and_then(|f| f.value.as_ref())
    }

    /// An error about this node.
    pub fn err(&self, msg: impl Into<String>) -> OnnxError {
        OnnxError::Node { node: self.proto.name.clone(), op_type: self.proto.op_type.clone(), msg: msg.into() }
    }

    fn attr_err(&self, attr: &str, msg: impl Into<String>) -> OnnxError {
        OnnxError::Attribute {
            node: self.proto.name.clone(),
            op_type: self.proto.op_type.clone(),
            attr: attr.to_string(),
            msg: msg.into(),
        }
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.proto.attribute.iter().any(|a| a.name == name)
    }

    /// The attribute `name`, checked to be of type `ty` when the file says its type.
    fn attr(&self, name: &str, ty: AttributeType) -> Result<Option<&'a AttributeProto>> {
        let Some(a) = self.proto.attribute.iter().find(|a| a.name == name) else { return Ok(None) };
        if !a.ref_attr_name.is_empty() {
            return Err(self.attr_err(name, "references a function attribute, which is only valid inside a function"));
        }
        match AttributeType::try_from(a.r#type) {
            Ok(AttributeType::Undefined) => Ok(Some(a)),
            Ok(t) if t == ty => Ok(Some(a)),
            Ok(t) => Err(self.attr_err(name, format!("expected {ty:?}, got {t:?}"))),
            Err(_) => Err(self.attr_err(name, format!("unknown attribute type {}", a.r#type))),
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.attr(name, AttributeType::Int)?.map(|a| a.i))
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool> {
        Ok(self.int(name)?.map_or(default, |v| v != 0))
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>> {
        Ok(self.attr(name, AttributeType::Float)?.map(|a| a.f))
    }

    pub fn float_or(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.attr(name, AttributeType::Ints)?.map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self.attr(name, AttributeType::Floats)?.map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str) -> Result<Option<String>> {
        self.attr(name, AttributeType::String)?
            .map(|a| String::from_utf8(a.s.to_vec()).map_err(|_| self.attr_err(name, "is not UTF-8")))
            .transpose()
    }

    pub fn string_or(&self, name: &str, default: &str) -> Result<String> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_string()))
    }

    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        let Some(a) = self.attr(name, AttributeType::Strings)? else { return Ok(None) };
        a.strings
            .iter()
            .map(|s| String::from_utf8(s.to_vec()).map_err(|_| self.attr_err(name, "is not UTF-8")))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(a) = self.attr(name, AttributeType::Tensor)? else { return Ok(None) };
        let t = a.t.as_ref().ok_or_else(|| self.attr_err(name, "has no tensor"))?;
        tensor_from_proto(t, self.env.base_dir.as_deref()).map(Some).map_err(|e| self.attr_err(name, e.to_string()))
    }

    /// An attribute holding an ONNX data type number (e.g. Cast's `to`).
    pub fn dtype(&self, name: &str) -> Result<Option<DType>> {
        self.int(name)?.map(|id| dtype_of(id as i32, name).map_err(|e| self.attr_err(name, e.to_string()))).transpose()
    }

    /// A required attribute: error naming it when missing.
    pub fn req<T>(&self, name: &str, v: Result<Option<T>>) -> Result<T> {
        v?.ok_or_else(|| self.attr_err(name, "is required but missing"))
    }

    /// Imports the subgraph in attribute `name`. Names it reads from enclosing graphs
    /// become its `captures`; the importer wires them as extra inputs of this node.
    pub fn subgraph(&mut self, name: &str) -> Result<Graph> {
        let a = self.attr(name, AttributeType::Graph)?;
        let g = a.and_then(|a| a.g.as_ref()).ok_or_else(|| self.attr_err(name, "subgraph is required but missing"))?;
        build_graph(g, Some(&mut *self.resolver), self.env)
    }

    pub fn base_dir(&self) -> Option<&Path> {
        self.env.base_dir.as_deref()
    }
}
