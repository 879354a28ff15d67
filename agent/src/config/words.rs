//! toml's and serde's schema errors in the operator's words: the file is
//! written by people who know TOML, not Rust, so "expected u32" becomes
//! "must be a whole number from 0 to 4294967295" and "missing field
//! `cluster`" becomes "the [cluster] table is missing". toml's location
//! (line, column, the caret under the value) is kept as it is.

/// The tables of the file: a missing one is a table, not a key.
const TABLES: [&str; 2] = ["node", "cluster"];

/// Rewrites every line of a toml error message.
pub(super) fn plain(message: &str) -> String {
    message.lines().map(line).collect::<Vec<_>>().join("\n")
}

fn line(l: &str) -> String {
    if let Some(name) = l
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return if TABLES.contains(&name) {
            format!("the [{name}] table is missing")
        } else {
            format!("the key `{name}` is missing (it has no default)")
        };
    }
    if let Some(rest) = l.strip_prefix("unknown field `") {
        if let Some((name, known)) = rest.split_once("`, expected one of ") {
            return format!("unknown key `{name}`; known keys here: {known}");
        }
        if let Some((name, known)) = rest.split_once("`, expected ") {
            return format!("unknown key `{name}`; the only key here is {known}");
        }
    }
    if l == "invalid type: map, expected a sequence" {
        // `[vip]` where `[[vip]]` is meant: the commonest TOML slip here.
        return "a single table given where a list of tables is expected: write each entry as [[name]], not [name]".into();
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((given, expected)) = l
            .strip_prefix(prefix)
            .and_then(|r| r.rsplit_once(", expected "))
        {
            return format!("{} given: must be {}", value(given), kind(expected));
        }
    }
    l.to_string()
}

/// serde's description of the value found (`string "x"`, ``integer `-3` ``).
fn value(v: &str) -> String {
    let unquote = |s: &str| s.trim_matches('`').to_string();
    match v.split_once(' ') {
        Some(("string", s)) => s.to_string(),
        Some(("integer" | "boolean", s)) => unquote(s),
        Some(("floating", s)) => unquote(s.trim_start_matches("point ")),
        _ => match v {
            "map" => "a table".into(),
            "sequence" => "a list".into(),
            other => other.into(),
        },
    }
}

/// serde's description of the type wanted (`i64`, `u32`, `a sequence`).
fn kind(t: &str) -> String {
    match t {
        "i64" => "a whole number".into(),
        "u8" => "a whole number from 0 to 255".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "u64" => "a whole number from 0 to 18446744073709551615".into(),
        "a sequence" => "a list, like [\"a\", \"b\"]".into(),
        "a string" => "a quoted string".into(),
        "a boolean" => "true or false".into(),
        t if t.starts_with("struct ") => "a table".into(),
        t => t.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            plain("invalid type: string \"x\", expected i64"),
            "\"x\" given: must be a whole number"
        );
        assert_eq!(
            plain("invalid value: integer `-3`, expected u32"),
            "-3 given: must be a whole number from 0 to 4294967295"
        );
        assert_eq!(
            plain("invalid type: floating point `1.5`, expected u64"),
            "1.5 given: must be a whole number from 0 to 18446744073709551615"
        );
        assert_eq!(
            plain("invalid type: string \"x\", expected a sequence"),
            "\"x\" given: must be a list, like [\"a\", \"b\"]"
        );
        assert_eq!(
            plain("missing field `cluster`"),
            "the [cluster] table is missing"
        );
        assert_eq!(
            plain("missing field `name`"),
            "the key `name` is missing (it has no default)"
        );
        assert_eq!(
            plain("unknown field `wieght`, expected one of `id`, `weight`"),
            "unknown key `wieght`; known keys here: `id`, `weight`"
        );
        assert_eq!(plain("  |\n2 | id = 1"), "  |\n2 | id = 1");
    }
}
