//! The `novactl …` command lines of README.md's code blocks, as a reader would type them.
//! Shared by novactl's own unit tests (which parse each with clap) and the integration test
//! that runs each against a real daemon.
#![allow(dead_code)]

/// The README at the top of the tree.
pub const README: &str = include_str!("../../../README.md");

/// Every `novactl` command in a fenced code block: comments (` # …`) dropped, `;`-separated
/// commands split, each as its words (the README quotes nothing on these lines; a quote would
/// be refused here rather than split wrongly).
pub fn novactl_lines(readme: &str) -> Vec<Vec<String>> {
    let mut in_block = false;
    let mut out = Vec::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let code = match line.find(" #") {
            Some(i) => &line[..i],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        for command in code.split(';') {
            let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
            if words.first().map(String::as_str) != Some("novactl") {
                continue;
            }
            assert!(
                !command.contains(['"', '\'', '\\', '$', '`']),
                "README line {command:?} needs shell parsing: extend novactl_lines"
            );
            out.push(words);
        }
    }
    out
}
