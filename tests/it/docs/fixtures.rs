//! The small files the documents' commands name (report.pdf, photos/,
//! project/ ...), written into each directory a walkthrough runs in.

use std::fs;
use std::path::Path;

/// Relative path and contents of every fixture.
const FILES: &[(&str, &[u8])] = &[
    ("report.pdf", b"%PDF-1.4 not really a report\n"),
    ("notes.txt", b"notes\n"),
    ("data", b"some data\n"),
    ("dump.sql", b"select 1;\n"),
    ("photos/beach.jpg", b"a photo\n"),
    ("photos/hill.jpg", b"another photo\n"),
    ("project/README", b"a project\n"),
    ("project/src/main.c", b"int main(void) { return 0; }\n"),
];

/// Writes the fixtures into `dir`.
pub fn write(dir: &Path) {
    for (name, data) in FILES {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
}
