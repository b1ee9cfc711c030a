//! Taking a rejected key out of the file text so that deserialization can go on.
//!
//! The file layer deserializes from text, because `Spanned` values need the text's
//! positions. To find the errors after the first, the offending entry is *blanked*: every
//! character of it except line breaks becomes spaces (as many as the character's UTF-8
//! length), so the text keeps its length and its lines, and every position later errors
//! report is still a position in the original file. Which bytes make up the entry comes
//! from a `toml_edit` parse of the text: a `key = value` line (with its dotted-key prefix),
//! an entry of an inline table (with its comma), or a whole `[table]` /
//! `[[array-of-tables]]` section including its sub-tables.

use std::ops::Range;

use toml_edit::{ArrayOfTables, ImDocument, Item, Key, Table, Value};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A key of a table or inline table.
    Key(String),
    /// An element of an array or array of tables.
    Index(usize),
}

/// Where navigation stands: the kind of node the path has reached.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Inline(&'a toml_edit::InlineTable),
    Array(&'a toml_edit::Array),
    Tables(&'a ArrayOfTables),
    Scalar,
}

impl<'a> Node<'a> {
    fn of_item(item: &'a Item) -> Self {
        match item {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(v) => Node::of_value(v),
            Item::None => Node::Scalar,
        }
    }

    fn of_value(value: &'a Value) -> Self {
        match value {
            Value::InlineTable(t) => Node::Inline(t),
            Value::Array(a) => Node::Array(a),
            _ => Node::Scalar,
        }
    }
}

/// The entry that gets removed: a key of a table (or inline table) and its item.
struct Entry<'a> {
    inline: bool,
    key: &'a Key,
    item: &'a Item,
}

/// The byte ranges of `text` that hold the entry at `path`, or `None` if the path cannot
/// be followed or a span is unknown.
///
/// The entry removed is the deepest *key* on the path: when the path ends inside an array
/// (a wrongly typed element), the whole `key = [...]` goes, since taking one element out
/// would shift the indices of the ones after it and later errors would name the wrong one.
pub(crate) fn entry_ranges(text: &str, path: &[Step]) -> Option<Vec<Range<usize>>> {
    let doc = ImDocument::parse(text).ok()?;
    let mut node = Node::Table(doc.as_table());
    let mut entry: Option<Entry<'_>> = None;
    for step in path {
        node = match (node, step) {
            (Node::Table(t), Step::Key(k)) => {
                let (key, item) = t.get_key_value(k)?;
                entry = Some(Entry {
                    inline: false,
                    key,
                    item,
                });
                Node::of_item(item)
            }
            (Node::Inline(t), Step::Key(k)) => {
                let (key, item) = t.get_key_value(k)?;
                entry = Some(Entry {
                    inline: true,
                    key,
                    item,
                });
                Node::of_item(item)
            }
            (Node::Array(a), Step::Index(i)) => Node::of_value(a.get(*i)?),
            (Node::Tables(a), Step::Index(i)) => Node::Table(a.get(*i)?),
            _ => return None,
        };
    }
    let entry = entry?;
    let mut ranges = Vec::new();
    match entry.item {
        Item::Value(value) => value_ranges(text, entry.key, value, entry.inline, &mut ranges)?,
        Item::Table(table) => table_ranges(text, table, &mut ranges)?,
        Item::ArrayOfTables(tables) => {
            for table in tables.iter() {
                table_ranges(text, table, &mut ranges)?;
            }
        }
        Item::None => return None,
    }
    Some(ranges)
}

/// `key = value` from the start of its (possibly dotted) key to the end of the value; in an
/// inline table, with the comma that separates it from its neighbour. The parent of a
/// dotted key in an inline table (`a` of `{ a.b = 1, a.c = 2 }`) is no text of its own:
/// its leaf entries are removed one by one.
fn value_ranges(
    text: &str,
    key: &Key,
    value: &Value,
    inline: bool,
    out: &mut Vec<Range<usize>>,
) -> Option<()> {
    if let Value::InlineTable(table) = value {
        if table.is_dotted() {
            for (name, _) in table.iter() {
                let (key, item) = table.get_key_value(name)?;
                value_ranges(text, key, item.as_value()?, inline, out)?;
            }
            return Some(());
        }
    }
    out.push(value_entry(text, key, value, inline)?);
    Some(())
}

/// The range of one `key = value` (see [`value_ranges`]).
fn value_entry(text: &str, key: &Key, value: &Value, inline: bool) -> Option<Range<usize>> {
    let start = dotted_start(text, key.span()?.start);
    let end = value.span()?.end;
    if !inline {
        return Some(start..end);
    }
    let bytes = text.as_bytes();
    let after = skip_blanks_forward(bytes, end);
    if bytes.get(after) == Some(&b',') {
        return Some(start..after + 1);
    }
    let before = skip_blanks_back(bytes, start);
    if before > 0 && bytes[before - 1] == b',' {
        return Some(before - 1..end);
    }
    Some(start..end)
}

/// Every range of a table: its header and body when it has a header, the entries of a
/// dotted table, and (recursively) its sub-tables, which have sections of their own.
fn table_ranges(text: &str, table: &Table, out: &mut Vec<Range<usize>>) -> Option<()> {
    let has_header = !table.is_implicit() && !table.is_dotted();
    if has_header {
        // From the header to the end of the last value of its body.
        out.push(table.span()?);
    }
    for (name, _) in table.iter() {
        let (key, item) = table.get_key_value(name)?;
        match item {
            Item::Value(value) if !has_header => value_ranges(text, key, value, false, out)?,
            Item::Value(_) | Item::None => {}
            Item::Table(sub) => table_ranges(text, sub, out)?,
            Item::ArrayOfTables(tables) => {
                for sub in tables.iter() {
                    table_ranges(text, sub, out)?;
                }
            }
        }
    }
    Some(())
}

/// The start of a dotted key (`a.b.c`) given the start of its last part.
fn dotted_start(text: &str, leaf: usize) -> usize {
    let bytes = text.as_bytes();
    let mut start = leaf;
    loop {
        let mut at = skip_blanks_back(bytes, start);
        if at == 0 || bytes[at - 1] != b'.' {
            return start;
        }
        at = skip_blanks_back(bytes, at - 1);
        match at.checked_sub(1).map(|i| bytes[i]) {
            Some(quote @ (b'"' | b'\'')) => match text[..at - 1].rfind(char::from(quote)) {
                Some(open) => at = open,
                None => return start,
            },
            _ => {
                let end = at;
                while at > 0 && is_bare_key_byte(bytes[at - 1]) {
                    at -= 1;
                }
                if at == end {
                    return start;
                }
            }
        }
        start = at;
    }
}

fn is_bare_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn skip_blanks_back(bytes: &[u8], mut at: usize) -> usize {
    while at > 0 && matches!(bytes[at - 1], b' ' | b'\t') {
        at -= 1;
    }
    at
}

fn skip_blanks_forward(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\t') {
        at += 1;
    }
    at
}

/// `text` with every character that starts inside one of `ranges` replaced by spaces,
/// keeping line breaks and the byte length (so positions stay valid).
pub(crate) fn blank(text: &str, ranges: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len());
    for (at, c) in text.char_indices() {
        if c != '\n' && c != '\r' && ranges.iter().any(|r| r.contains(&at)) {
            out.extend(std::iter::repeat_n(' ', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(k: &str) -> Step {
        Step::Key(k.to_owned())
    }

    /// The text with the entry at `path` blanked, trailing spaces trimmed per line.
    fn without(text: &str, path: &[Step]) -> String {
        let ranges = entry_ranges(text, path).unwrap();
        let blanked = blank(text, &ranges);
        assert_eq!(blanked.len(), text.len());
        let lines: Vec<&str> = blanked.lines().map(str::trim_end).collect();
        lines.join("\n")
    }

    #[test]
    fn removes_a_key_value_line() {
        let text = "threds = 4\n[node]\nregion = \"a\" # here\nname = \"é\"\n";
        assert_eq!(
            without(text, &[key("threds")]),
            "\n[node]\nregion = \"a\" # here\nname = \"é\""
        );
        assert_eq!(
            without(text, &[key("node"), key("name")]),
            "threds = 4\n[node]\nregion = \"a\" # here\n"
        );
    }

    #[test]
    fn removes_a_dotted_key() {
        let text = "[node]\nregion . x = 1\n\"a\".'b'.c = 2\n";
        assert_eq!(
            without(text, &[key("node"), key("region"), key("x")]),
            "[node]\n\n\"a\".'b'.c = 2"
        );
        assert_eq!(
            without(text, &[key("node"), key("a")]),
            "[node]\nregion . x = 1\n"
        );
    }

    #[test]
    fn removes_an_inline_table_entry_with_its_comma() {
        let text = "b = [{ x = 1, y = \"2\", z = 3 }, { y = [1, 2] }]\n";
        let b0 = [key("b"), Step::Index(0)];
        assert_eq!(
            without(text, &[b0[0].clone(), b0[1].clone(), key("y")]),
            "b = [{ x = 1,          z = 3 }, { y = [1, 2] }]"
        );
        assert_eq!(
            without(text, &[b0[0].clone(), b0[1].clone(), key("z")]),
            "b = [{ x = 1, y = \"2\"        }, { y = [1, 2] }]"
        );
        // An element of an array: the whole key goes, so later indices stay right.
        assert_eq!(
            without(text, &[key("b"), Step::Index(1), key("y"), Step::Index(0)]),
            "b = [{ x = 1, y = \"2\", z = 3 }, {            }]"
        );
        assert_eq!(without(text, &[key("b"), Step::Index(1)]), "");
    }

    #[test]
    fn removes_a_dotted_key_of_an_inline_table() {
        let text = "b = [{ a.b = 1, c = 2, a . d = 3 }]\n";
        assert_eq!(
            without(text, &[key("b"), Step::Index(0), key("a")]),
            "b = [{          c = 2            }]"
        );
    }

    #[test]
    fn removes_a_table_with_its_body_and_sub_tables() {
        let text = "[listners]\nhttp = [\n  \"a\",\n]\n\n[node]\nregion = \"a\"\n\n[listners.sub]\nx = 1\n";
        assert_eq!(
            without(text, &[key("listners")]),
            "\n\n\n\n\n[node]\nregion = \"a\"\n\n\n"
        );
    }

    #[test]
    fn removes_implicit_and_array_tables() {
        let text = "[regoins.a]\nx = 1\n[[regoins.a.b]]\ny = 2\n[[regoins.a.b]]\n[node]\nz = 1\n";
        assert_eq!(without(text, &[key("regoins")]), "\n\n\n\n\n[node]\nz = 1");
        assert_eq!(
            without(text, &[key("regoins"), key("a"), key("b"), Step::Index(1)]),
            "[regoins.a]\nx = 1\n\n\n\n[node]\nz = 1"
        );
    }

    #[test]
    fn unknown_paths_give_none() {
        let text = "[node]\nregion = \"a\"\n";
        assert!(entry_ranges(text, &[key("nope")]).is_none());
        assert!(entry_ranges(text, &[key("node"), Step::Index(0)]).is_none());
        assert!(entry_ranges(text, &[]).is_none());
        assert!(entry_ranges("a = ", &[key("a")]).is_none());
    }
}
