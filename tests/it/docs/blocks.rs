//! Reading the command blocks out of a Markdown file: fenced `sh`, `bash`,
//! `shell` and `console` blocks, split into steps (a command and the output
//! it shows).

/// One fenced command block.
pub struct Block {
    /// The Markdown file, relative to the repository.
    pub file: String,
    /// Line of the opening fence (1-based).
    pub line: usize,
    /// The info string: `sh`, `bash`, `shell` or `console`.
    pub lang: String,
    /// The lines between the fences, indentation of the fence removed.
    pub body: Vec<String>,
}

impl Block {
    /// The first non-empty line, trimmed: what the skip list names.
    pub fn first_line(&self) -> &str {
        self.body
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .unwrap_or("")
    }

    /// A script (its first line is `#!`): run whole, never split into steps.
    pub fn is_script(&self) -> bool {
        self.first_line().starts_with("#!")
    }

    /// The file a script block is the contents of: its second line is
    /// `# NAME: what it does`, with NAME one word, such as `# collect.sh: …`.
    pub fn file_of_script(&self) -> Option<&str> {
        let second = self.body.get(1)?.strip_prefix("# ")?;
        let (name, _) = second.split_once(": ")?;
        (self.is_script() && !name.contains(char::is_whitespace)).then_some(name)
    }

    /// Where the block is, for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A command and the lines it shows (only `console` blocks show any).
pub struct Step {
    pub cmd: String,
    pub expect: Vec<String>,
}

/// Languages whose blocks are commands.
const COMMAND_LANGS: &[&str] = &["sh", "bash", "shell", "console"];
/// Languages of blocks that are not run. A block tagged otherwise (or not
/// at all) fails the test, so no command block escapes it by its tag.
const OTHER_LANGS: &[&str] = &["text", "rust", "toml", "json"];

/// Every command block of `text`, in order.
pub fn extract(file: &str, text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, usize, Vec<String>)> = None;
    for (i, raw) in text.lines().enumerate() {
        let indent = raw.len() - raw.trim_start().len();
        let line = raw.trim_start();
        match open.take() {
            None if line.starts_with("```") => {
                let lang = line.trim_start_matches('`').trim().to_string();
                assert!(
                    COMMAND_LANGS.contains(&lang.as_str()) || OTHER_LANGS.contains(&lang.as_str()),
                    "{file}:{}: a fenced block tagged {lang:?}: tag commands sh or console, \
                     anything else text (or rust, toml, json)",
                    i + 1
                );
                open = Some((i + 1, lang, indent, Vec::new()));
            }
            None => {}
            Some((start, lang, _, body)) if line.starts_with("```") => {
                let commands = COMMAND_LANGS.contains(&lang.as_str());
                blocks.extend(commands.then(|| Block {
                    file: file.into(),
                    line: start,
                    lang,
                    body,
                }));
            }
            Some((start, lang, ind, mut body)) => {
                let cut = ind.min(indent);
                body.push(raw[cut..].to_string());
                open = Some((start, lang, ind, body));
            }
        }
    }
    assert!(open.is_none(), "{file}: a fenced block is never closed");
    blocks
}

/// The steps of a block: for `console`, each `$ ` line and the output lines
/// after it; otherwise each command line (comment lines dropped, lines
/// ending in `\` joined with the next).
pub fn steps(block: &Block) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut pending = String::new();
    for line in &block.body {
        let (is_cmd, text) = if block.lang == "console" {
            match line.strip_prefix("$ ") {
                Some(c) => (true, c),
                None if !pending.is_empty() => (true, line.as_str()),
                None => (false, line.as_str()),
            }
        } else {
            (true, line.as_str())
        };
        if !is_cmd {
            if let Some(last) = steps.last_mut() {
                last.expect.push(text.trim_end().to_string());
            }
            continue;
        }
        let t = text.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(t);
                steps.push(Step {
                    cmd: std::mem::take(&mut pending),
                    expect: Vec::new(),
                });
            }
        }
    }
    steps
}

/// Whether `actual` matches the shown line `shown`: equal, where each `…`
/// in `shown` stands for any text.
pub fn line_matches(shown: &str, actual: &str) -> bool {
    let parts: Vec<&str> = shown.trim_end().split('…').collect();
    let actual = actual.trim_end();
    if parts.len() == 1 {
        return parts[0] == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    if !actual.ends_with(last) {
        return false;
    }
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The shown lines that `output` lacks: each shown line must match a line
/// of the output, in order (lines the block leaves out are not compared).
pub fn missing(shown: &[String], output: &str) -> Vec<String> {
    let mut lines = output.lines();
    let mut missing = Vec::new();
    for s in shown.iter().filter(|s| !s.trim().is_empty()) {
        if !lines.by_ref().any(|a| line_matches(s, a)) {
            missing.push(s.clone());
            lines = output.lines();
        }
    }
    missing
}
