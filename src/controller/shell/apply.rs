//! Server-side apply of any text. The API server reads an apply patch as YAML, and YAML
//! refuses some characters JSON carries raw (DEL, the C1 controls, U+FFFE, U+FFFF) and
//! folds others as line breaks (U+0085, U+2028, U+2029): a command's output holding one
//! would make every status write fail, or change what status says. The patch is sent as
//! JSON with those characters escaped, which YAML reads back to the same text.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Applies `body` to `name` (or to its `subresource`) under `params`.
pub async fn apply<K, B>(
    api: &Api<K>,
    name: &str,
    subresource: Option<&str>,
    params: &PatchParams,
    body: &B,
) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    B: Serialize + Debug,
{
    let request = kube::core::Request::new(api.resource_url());
    let patch = Patch::Apply(body);
    let mut req = match subresource {
        Some(sub) => request.patch_subresource(sub, name, params, &patch),
        None => request.patch(name, params, &patch),
    }
    .map_err(kube::Error::BuildRequest)?;
    let escaped = yaml_safe(req.body());
    *req.body_mut() = escaped;
    req.extensions_mut().insert(if subresource.is_some() {
        "patch_status"
    } else {
        "patch"
    });
    api.clone().into_client().request::<K>(req).await
}

/// JSON text with every character YAML does not allow raw written as a `\uXXXX` escape.
/// Such characters can only stand inside JSON strings, where the escape means the same.
fn yaml_safe(json: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(json) else {
        return json.to_vec();
    };
    if !text.chars().any(not_yaml) {
        return json.to_vec();
    }
    let mut out = String::with_capacity(text.len() + 64);
    for c in text.chars() {
        if not_yaml(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out.into_bytes()
}

/// Outside YAML's printable set (tab, LF, CR, 0x20-0x7E, 0x85, 0xA0-0xD7FF,
/// 0xE000-0xFFFD, 0x10000 and above), or one of YAML 1.1's line breaks besides LF and CR.
fn not_yaml(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_yaml_refuses_are_escaped_and_mean_the_same() {
        let text = "a\u{7f}b\u{85}c\u{9f}d\u{fffe}\u{ffff} \u{2028} \u{2029}é𝄞\"\\\n\u{1}";
        let json = serde_json::to_vec(&serde_json::json!({"output": text})).expect("json");
        let safe = yaml_safe(&json);
        let shown = String::from_utf8(safe.clone()).expect("utf-8");
        assert!(!shown.chars().any(not_yaml), "{shown:?}");
        assert!(
            shown.contains("\\u007f") && shown.contains("\\ufffe"),
            "{shown}"
        );
        let back: serde_json::Value = serde_json::from_slice(&safe).expect("still JSON");
        assert_eq!(back["output"], text);
    }

    #[test]
    fn text_yaml_allows_is_left_as_it_is() {
        let json = br#"{"output":"plain \u0001 \" \\ \n \u00e9 ok"}"#;
        assert_eq!(yaml_safe(json), json.to_vec());
    }
}
