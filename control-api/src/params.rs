//! Request parameters from the query string, a JSON body or a form body (Rails-style
//! `user[login]` names), merged into one flat map of strings.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};

use crate::error::ApiError;

/// Flat parameters: `user[login]` for nested JSON objects, every value as a string.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(pub BTreeMap<String, String>);

fn flatten(prefix: Option<&str>, v: &serde_json::Value, out: &mut BTreeMap<String, String>) -> Result<(), ApiError> {
    use serde_json::Value;
    let key = |k: &str| match prefix {
        Some(p) => format!("{p}[{k}]"),
        None => k.to_string(),
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(_) => flatten(Some(&key(k)), v, out)?,
                    Value::String(s) => {
                        out.insert(key(k), s.clone());
                    }
                    Value::Bool(b) => {
                        out.insert(key(k), b.to_string());
                    }
                    Value::Number(n) => {
                        out.insert(key(k), n.to_string());
                    }
                    Value::Null => {}
                    Value::Array(_) => {
                        return Err(ApiError::bad_request(format!("parameter {} must not be a list", key(k))))
                    }
                }
            }
            Ok(())
        }
        _ => Err(ApiError::bad_request("the JSON body must be an object")),
    }
}

impl Params {
    /// Merge the query string and the body (JSON or form, by content type; a body without a
    /// content type is tried as JSON, then as a form).
    ///
    /// # Errors
    /// 400 for a body or query that does not parse.
    pub fn parse(query: Option<&str>, headers: &HeaderMap, body: &Bytes) -> Result<Params, ApiError> {
        let mut map = BTreeMap::new();
        if let Some(q) = query {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(q).map_err(|e| ApiError::bad_request(format!("query string: {e}")))?;
            map.extend(pairs);
        }
        let trimmed = body.iter().all(u8::is_ascii_whitespace);
        if !trimmed {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let as_json = || -> Result<BTreeMap<String, String>, ApiError> {
                let v: serde_json::Value =
                    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("JSON body: {e}")))?;
                let mut m = BTreeMap::new();
                flatten(None, &v, &mut m)?;
                Ok(m)
            };
            let as_form = || -> Result<Vec<(String, String)>, ApiError> {
                serde_urlencoded::from_bytes(body).map_err(|e| ApiError::bad_request(format!("form body: {e}")))
            };
            if ct.starts_with("application/json") {
                map.extend(as_json()?);
            } else {
                // A form by its content type, or a body of no declared type that is not JSON.
                match (ct.starts_with("application/x-www-form-urlencoded"), as_json()) {
                    (false, Ok(m)) => map.extend(m),
                    _ => map.extend(as_form()?),
                }
            }
        }
        Ok(Params(map))
    }

    /// An optional string (empty counts as absent).
    pub fn opt(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }

    /// A required string.
    ///
    /// # Errors
    /// 400 naming the parameter.
    pub fn req(&self, name: &str) -> Result<String, ApiError> {
        self.opt(name).ok_or_else(|| ApiError::bad_request(format!("missing parameter {name}")))
    }

    /// A boolean (`true/false/yes/no/1/0`), `default` when absent.
    ///
    /// # Errors
    /// 400 for another value.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.opt(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "true" | "yes" | "1" | "on" => Ok(true),
                "false" | "no" | "0" | "off" => Ok(false),
                _ => Err(ApiError::bad_request(format!("parameter {name} must be true or false, not {v:?}"))),
            },
        }
    }

    /// An optional unsigned number, at most `max`.
    ///
    /// # Errors
    /// 400 when not a number, 422 when out of range.
    pub fn num(&self, name: &str, max: u64) -> Result<Option<u64>, ApiError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => {
                let n: u64 = v
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("parameter {name} must be a number, not {v:?}")))?;
                if n > max {
                    return Err(ApiError::unprocessable(format!("parameter {name} must be at most {max}")));
                }
                Ok(Some(n))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: Option<&str>, ct: &str, body: &str) -> Result<Params, ApiError> {
        let mut h = HeaderMap::new();
        if !ct.is_empty() {
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        }
        Params::parse(q, &h, &Bytes::from(body.to_string()))
    }

    #[test]
    fn json_form_and_query_agree() {
        let j =
            parse(None, "application/json", r#"{"user":{"login":"admin","password":"pw"},"n":3,"b":true}"#).unwrap();
        let f =
            parse(None, "application/x-www-form-urlencoded", "user%5Blogin%5D=admin&user%5Bpassword%5D=pw&n=3&b=true")
                .unwrap();
        let q = parse(Some("user[login]=admin&user[password]=pw&n=3&b=true"), "", "").unwrap();
        assert_eq!(j, f);
        assert_eq!(j, q);
        assert_eq!(j.req("user[login]").unwrap(), "admin");
        assert_eq!(j.num("n", 10).unwrap(), Some(3));
        assert!(j.flag("b", false).unwrap());
    }

    #[test]
    fn bad_input_is_a_client_error() {
        assert_eq!(parse(None, "application/json", "{").unwrap_err().status, 400);
        assert_eq!(parse(None, "application/json", "[1]").unwrap_err().status, 400);
        let p = parse(Some("n=x&m=99&b=maybe"), "", "").unwrap();
        assert_eq!(p.num("n", 10).unwrap_err().status, 400);
        assert_eq!(p.num("m", 10).unwrap_err().status, 422);
        assert_eq!(p.flag("b", true).unwrap_err().status, 400);
        assert_eq!(p.req("missing").unwrap_err().status, 400);
    }
}
