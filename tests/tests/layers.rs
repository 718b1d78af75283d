//! scripts/check-layers.py, which scripts/test.sh runs first, fails on each breach of the house
//! rules it names: tried on a small checkout of its own.

use std::path::Path;
use std::process::Command;

use runbook_tests::workspace_root;

/// Runs the check on a checkout holding `files` (path, text); its exit code and output.
fn check(files: &[(&str, String)]) -> (i32, String) {
    let checkout = std::env::temp_dir().join(format!("layers-{}", uuid::Uuid::new_v4()));
    for (path, text) in files {
        let path = checkout.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).expect("folder");
        std::fs::write(path, text).expect("file");
    }
    let output = Command::new("python3")
        .arg(workspace_root().join("scripts/check-layers.py"))
        .arg(&checkout)
        .output()
        .expect("python3 runs the check");
    let _ = std::fs::remove_dir_all(&checkout);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// A function of `lines` lines whose body holds braces in strings, chars and comments, which
/// must not end it early or late.
fn function(comment: &str, lines: usize) -> String {
    let body: String = (0..lines - 2)
        .map(|line| format!("    let _x{line} = \"}}\"; let _y = '{{'; // }}\n"))
        .collect();
    format!("{comment}pub fn long() {{\n{body}}}\n")
}

#[test]
fn a_long_function_passes_only_with_its_reason_and_a_circle_never() {
    let lib = "pub mod model;\npub mod store;\n".to_string();
    let clean = |model: String| {
        vec![
            ("shared/src/lib.rs", lib.clone()),
            ("shared/src/model.rs", model),
            (
                "shared/src/store.rs",
                "use crate::model::long;\n".to_string(),
            ),
        ]
    };

    let (code, output) = check(&clean(function("", 80)));
    assert_eq!(code, 0, "{output}");

    let (code, output) = check(&clean(function("/// Does a lot.\n", 81)));
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("shared/src/model.rs:2: fn long is 81 lines"),
        "{output}"
    );

    let explained = "/// Does a lot.\n// Over 80 lines: one table read in one place.\n";
    let (code, output) = check(&clean(function(explained, 200)));
    assert_eq!(code, 0, "{output}");

    let mut circle = clean(function("", 3));
    circle[1].1.push_str("use crate::store::other;\n");
    let (code, output) = check(&circle);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("import circle between model, store"),
        "{output}"
    );
    assert!(
        output.contains("model imports store, a layer above it"),
        "{output}"
    );
}

#[test]
fn signatures_nested_comments_and_extern_functions_do_not_hide_a_long_one() {
    let lib = |model: String| {
        vec![
            ("shared/src/lib.rs", "pub mod model;\n".to_string()),
            ("shared/src/model.rs", model),
        ]
    };
    let body: String = (0..85)
        .map(|line| format!("    let _x{line} = 1;\n"))
        .collect();
    for (signature, comment) in [
        ("pub fn long(bytes: [u8; 4]) -> [u8; 4] {\n", ""),
        ("pub extern \"C\" fn long() {\n", ""),
        ("pub fn long() {\n    /* a /* nested } */ } */\n", ""),
        // The reason must begin the line, as docs/architecture.md says.
        (
            "pub fn long() {\n",
            "// This is not over 80 lines: honest.\n",
        ),
    ] {
        let (code, output) = check(&lib(format!("{comment}{signature}{body}}}\n")));
        assert_eq!(code, 1, "{signature}: {output}");
        assert!(output.contains("fn long is"), "{signature}: {output}");
    }
    // A file over 500 lines, tests aside.
    let functions: String = (0..60)
        .map(|n| format!("pub fn f{n}() {{\n    let _ = {n};\n    let _ = {n};\n    let _ = {n};\n    let _ = {n};\n    let _ = {n};\n    let _ = {n};\n    let _ = {n};\n}}\n"))
        .collect();
    let (code, output) = check(&lib(functions.clone()));
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("shared/src/model.rs: 540 lines"),
        "{output}"
    );
    let (code, output) = check(&lib(format!(
        "pub fn f() {{}}\n#[cfg(test)]\nmod tests {{\n{functions}}}\n"
    )));
    assert_eq!(code, 0, "{output}");
}
