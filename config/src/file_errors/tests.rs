//! The file layer reports every unknown key and wrongly typed value, with positions in
//! the original text, and nothing that only follows from taking an entry out.

use crate::parse;

/// The errors `parse` reports for `text`, one per line.
fn errors(text: &str) -> String {
    parse(text, "m.toml", None).unwrap_err().to_string()
}

#[test]
fn three_misspelled_keys_are_all_reported() {
    let text = "\
threds = 4

[node]
regoin = \"a\"

[regions.a]
latitud = 1.0
longitude = 2.0
backends = [{ address = \"10.0.0.1:80\" }]
";
    assert_eq!(
        errors(text),
        "\
m.toml:1:1: threds: unknown key `threds` (hint: did you mean `threads`?)
m.toml:4:1: node.regoin: unknown key `regoin` (hint: did you mean `region`?)
m.toml:7:1: regions.a.latitud: unknown key `latitud` (hint: did you mean `latitude`?)"
    );
}

#[test]
fn a_wrongly_typed_required_key_is_one_error() {
    // Taking `latitude` out must not come back as "missing required key `latitude`", nor
    // the removed `weight` as anything else.
    let text = "\
[node]
region = \"a\"

[regions.a]
latitude = \"north\"
longitude = 2.0
backends = [{ address = \"10.0.0.1:80\", weight = \"2\", adress = \"x\" }]
";
    assert_eq!(
        errors(text),
        "\
m.toml:5:12: regions.a.latitude = \"north\": invalid type: string \"north\", expected a number
m.toml:7:49: regions.a.backends[0].weight = \"2\": invalid type: string \"2\", expected an integer
m.toml:7:54: regions.a.backends[0].adress: unknown key `adress` (hint: did you mean `address`?)"
    );
}

#[test]
fn errors_are_sorted_by_position_not_by_discovery() {
    // serde visits `regions` (and its later sub-table) before `node`.
    let text = "\
[regions.a]
latitude = 1.0
longitude = 2.0
backends = [{ address = \"10.0.0.1:80\" }]

[node]
regoin = \"a\"

[regions.a.health_check]
rise = \"2\"
";
    assert_eq!(
        errors(text),
        "\
m.toml:7:1: node.regoin: unknown key `regoin` (hint: did you mean `region`?)
m.toml:10:8: regions.a.health_check.rise = \"2\": invalid type: string \"2\", expected an integer"
    );
}

#[test]
fn whole_tables_and_array_elements() {
    // A misspelled table goes with its body and sub-tables (whose keys are not reported
    // again); a wrongly typed array element takes its array, so the index stays right.
    let text = "\
[listners]
http = [\"0.0.0.0:80\"]
bogus = 1

[listners.sub]
x = 1

[listeners]
http = [\"0.0.0.0:80\", 8080, 9090]

[[geoip.overrides]]
cidr = \"10.0.0.0/8\"
country = 49
[[geoip.overrides]]
cidr = 10
";
    assert_eq!(
        errors(text),
        "\
m.toml:1:2: listners: unknown key `listners` (hint: did you mean `listeners`?)
m.toml:9:23: listeners.http[1] = 8080: invalid type: integer `8080`, expected a string
m.toml:13:11: geoip.overrides[0].country = 49: invalid type: integer `49`, expected a string
m.toml:15:8: geoip.overrides[1].cidr = 10: invalid type: integer `10`, expected a string"
    );
}

#[test]
fn positions_stay_in_the_original_text() {
    // The removed entry has multi-byte characters; columns count characters.
    let text = "regoins = 1\n[regions.\"é\"]\nbackends = [{ adress = \"é—é\", weight = \"2\" }]\n";
    assert_eq!(
        errors(text),
        "\
m.toml:1:1: regoins: unknown key `regoins` (hint: did you mean `regions`?)
m.toml:3:15: regions.é.backends[0].adress: unknown key `adress` (hint: did you mean `address`?)
m.toml:3:40: regions.é.backends[0].weight = \"2\": invalid type: string \"2\", expected an integer"
    );
}

#[test]
fn a_syntax_error_is_reported_alone() {
    let text = "threds = 4\n[node]\nregion = \"a\n";
    assert_eq!(errors(text), "m.toml:3:12: invalid basic string");
}

#[test]
fn semantic_checks_wait_for_a_clean_file_layer() {
    let text = "\
[node]
region = \"a\"
regoin = \"b\"

[regions.a]
latitude = 100.0
longitude = 2.0
backends = [{ address = \"10.0.0.1:80\" }]
";
    assert_eq!(
        errors(text),
        "m.toml:3:1: node.regoin: unknown key `regoin` (hint: did you mean `region`?)"
    );
    let fixed = text.replace("regoin = \"b\"\n", "");
    assert_eq!(
        errors(&fixed),
        "m.toml:5:12: regions.a.latitude = 100.0: latitude must be between -90 and 90"
    );
}

#[test]
fn at_most_fifty_errors() {
    let text: String = (0..60).map(|i| format!("unknown{i} = {i}\n")).collect();
    let errors = parse(&text, "m.toml", None).unwrap_err();
    assert_eq!(errors.len(), 51);
    assert_eq!(
        errors.errors[49].to_string(),
        "m.toml:50:1: unknown49: unknown key `unknown49` (hint: valid keys are: `node`, \
         `listeners`, `threads`, `timeouts`, `logging`, `health_check`, `regions`, `geoip`, \
         `client`, `steering`, `residency`, `latency`, `outlier`, `retry`, `reload`, `dns`, `limits`, `admin`, `mesh`, `geodns`, `sticky`, `services`, `upstream`)"
    );
    assert_eq!(
        errors.errors[50].to_string(),
        "m.toml: too many errors; stopped after the first 50"
    );
}

#[test]
fn wrongly_typed_tables() {
    let text = "node = 5\n\n[threads]\nx = 1\n";
    assert_eq!(
        errors(text),
        "\
m.toml:1:8: node = 5: invalid type: integer `5`, expected a table
m.toml:3:1: threads: invalid type: table, expected an integer"
    );
}

#[test]
fn arrays_are_not_tables() {
    // serde's derived structs would take an array's elements as their fields in order.
    let text = "\
logging = [\"debug\"]

[node]
region = \"a\"

[regions.a]
latitude = 1.0
longitude = 2.0
backends = [[\"10.0.0.1:80\"]]
health_check = []

[[timeouts]]
connect = \"1s\"
";
    assert_eq!(
        errors(text),
        "\
m.toml:1:11: logging = [\"debug\"]: invalid type: array, expected a table
m.toml:9:13: regions.a.backends[0] = [\"10.0.0.1:80\"]: invalid type: array, expected a table
m.toml:10:16: regions.a.health_check = []: invalid type: array, expected a table
m.toml:12:1: timeouts: invalid type: array, expected a table"
    );
}

#[test]
fn dotted_keys_crlf_and_comments() {
    let text = "threds = 1 # x\r\nnode.regoin = 2\r\n[regions.a]\r\nbackends = [{ a.b = 1, c = 2 }] # y\r\n";
    assert_eq!(
        errors(text),
        "\
m.toml:1:1: threds: unknown key `threds` (hint: did you mean `threads`?)
m.toml:2:6: node.regoin: unknown key `regoin` (hint: did you mean `region`?)
m.toml:4:15: regions.a.backends[0].a: unknown key `a` (hint: valid keys are: `address`, `srv`, `weight`, `backup`)
m.toml:4:24: regions.a.backends[0].c: unknown key `c` (hint: valid keys are: `address`, `srv`, `weight`, `backup`)"
    );
}
