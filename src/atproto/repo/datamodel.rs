//! The ATProto data model: conversion between its JSON form (`$link`, `$bytes`, blob
//! objects) and IPLD values, and the data-model rules that DAG-CBOR alone does not enforce
//! (no floats, `$type` must be a non-empty string, well-formed blobs).

use super::cid::{check_atproto_cid, parse_cid};
use super::dagcbor::{Ipld, MAX_DEPTH};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataModelError {
    #[error("top-level record value must be an object")]
    NotObject,
    #[error("floats are not allowed in the ATProto data model")]
    Float,
    #[error("`$type` must be a non-empty string")]
    BadType,
    #[error("malformed `$link`: {0}")]
    BadLink(String),
    #[error("malformed `$bytes`")]
    BadBytes,
    #[error("malformed blob: {0}")]
    BadBlob(&'static str),
    #[error("nesting deeper than {0}")]
    TooDeep(usize),
}

/// Converts the JSON form of a record into IPLD and checks the data-model rules.
pub fn record_from_json(value: &Value) -> Result<Ipld, DataModelError> {
    if !value.is_object() {
        return Err(DataModelError::NotObject);
    }
    let ipld = json_to_ipld(value)?;
    validate(&ipld)?;
    Ok(ipld)
}

/// Converts any JSON value (not only records) into IPLD.
pub fn json_to_ipld(value: &Value) -> Result<Ipld, DataModelError> {
    json_rec(value, 0)
}

fn json_rec(value: &Value, depth: usize) -> Result<Ipld, DataModelError> {
    if depth > MAX_DEPTH {
        return Err(DataModelError::TooDeep(MAX_DEPTH));
    }
    Ok(match value {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ipld::Integer(i.into())
            } else if let Some(u) = n.as_u64() {
                Ipld::Integer(u.into())
            } else {
                // JSON has one number type: `123.0` is the integer 123 to every other
                // implementation, so only a real fraction is a float.
                let f = n.as_f64().ok_or(DataModelError::Float)?;
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                    Ipld::Integer((f as i64).into())
                } else {
                    return Err(DataModelError::Float);
                }
            }
        }
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(items) => Ipld::List(
            items
                .iter()
                .map(|v| json_rec(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            if let Some(link) = map.get("$link") {
                if map.len() != 1 {
                    return Err(DataModelError::BadLink("extra fields".into()));
                }
                let s = link
                    .as_str()
                    .ok_or_else(|| DataModelError::BadLink("not a string".into()))?;
                let cid = parse_cid(s).map_err(|e| DataModelError::BadLink(e.to_string()))?;
                return Ok(Ipld::Link(cid));
            }
            if let Some(bytes) = map.get("$bytes") {
                if map.len() != 1 {
                    return Err(DataModelError::BadBytes);
                }
                let s = bytes.as_str().ok_or(DataModelError::BadBytes)?;
                let raw = STANDARD_NO_PAD
                    .decode(s)
                    .or_else(|_| STANDARD.decode(s))
                    .map_err(|_| DataModelError::BadBytes)?;
                return Ok(Ipld::Bytes(raw));
            }
            let mut out = BTreeMap::new();
            for (k, v) in map {
                out.insert(k.clone(), json_rec(v, depth + 1)?);
            }
            Ipld::Map(out)
        }
    })
}

/// Checks the data-model rules on a decoded value (e.g. a record block from a CAR).
pub fn validate(value: &Ipld) -> Result<(), DataModelError> {
    validate_rec(value, 0)
}

fn validate_rec(value: &Ipld, depth: usize) -> Result<(), DataModelError> {
    if depth > MAX_DEPTH {
        return Err(DataModelError::TooDeep(MAX_DEPTH));
    }
    match value {
        Ipld::Float(_) => Err(DataModelError::Float),
        Ipld::Link(cid) => {
            check_atproto_cid(cid).map_err(|e| DataModelError::BadLink(e.to_string()))
        }
        Ipld::List(items) => items.iter().try_for_each(|v| validate_rec(v, depth + 1)),
        Ipld::Map(map) => {
            if let Some(t) = map.get("$type") {
                match t {
                    Ipld::String(s) if !s.is_empty() => {
                        if s == "blob" {
                            validate_blob(map)?;
                        }
                    }
                    _ => return Err(DataModelError::BadType),
                }
            }
            map.values().try_for_each(|v| validate_rec(v, depth + 1))
        }
        _ => Ok(()),
    }
}

fn validate_blob(map: &BTreeMap<String, Ipld>) -> Result<(), DataModelError> {
    match map.get("ref") {
        Some(Ipld::Link(_)) => {}
        _ => return Err(DataModelError::BadBlob("`ref` must be a link")),
    }
    match map.get("mimeType") {
        Some(Ipld::String(s)) if !s.is_empty() => {}
        _ => return Err(DataModelError::BadBlob("`mimeType` must be a string")),
    }
    match map.get("size") {
        Some(Ipld::Integer(n)) if *n >= 0 => {}
        _ => {
            return Err(DataModelError::BadBlob(
                "`size` must be a non-negative integer",
            ))
        }
    }
    Ok(())
}

/// Converts IPLD back to the ATProto JSON form.
pub fn ipld_to_json(value: &Ipld) -> Value {
    match value {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => {
            if let Ok(v) = i64::try_from(*i) {
                Value::from(v)
            } else if let Ok(v) = u64::try_from(*i) {
                Value::from(v)
            } else {
                // Outside i64/u64 range cannot come from DAG-CBOR; keep it lossless as text.
                Value::String(i.to_string())
            }
        }
        Ipld::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(b) => serde_json::json!({ "$bytes": STANDARD_NO_PAD.encode(b) }),
        Ipld::List(items) => Value::Array(items.iter().map(ipld_to_json).collect()),
        Ipld::Map(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), ipld_to_json(v)))
                .collect(),
        ),
        Ipld::Link(cid) => serde_json::json!({ "$link": cid.to_string() }),
    }
}
