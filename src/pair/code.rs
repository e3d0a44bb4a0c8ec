//! The short code: words from the EFF short word list, normalized so that
//! case, spaces and dashes do not matter.

use std::fmt;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// The EFF short word list #1 (its one hyphenated entry, "yo-yo", left out:
/// a dash separates words), one word per line.
const LIST: &str = include_str!("words.txt");

/// Words in a generated code unless `--code-words` says otherwise: three
/// words of the list are about 31 bits.
pub const DEFAULT_WORDS: usize = 3;

/// The word list.
pub fn words() -> impl Iterator<Item = &'static str> {
    LIST.lines()
}

/// How many words the list has.
pub const WORDS: usize = 1295;

/// A pairing code, normalized: lower case, words joined by single dashes.
/// Its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl Code {
    /// A fresh code of `n` words drawn uniformly from the list.
    pub fn generate(n: usize) -> Result<Code, String> {
        let list: Vec<&str> = words().collect();
        let rng = SystemRandom::new();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut b = [0u8; 2];
            rng.fill(&mut b)
                .map_err(|_| "no randomness for a code".to_string())?;
            // Rejection sampling keeps every word equally likely.
            let v = u16::from_be_bytes(b) as usize;
            let range = 65536 - 65536 % list.len();
            if v < range {
                out.push(list[v % list.len()]);
            }
        }
        Ok(Code(out.join("-")))
    }

    /// Reads a code as a person typed it: any case, words separated by
    /// dashes, spaces, underscores or dots.
    pub fn parse(s: &str) -> Result<Code, String> {
        let words: Vec<String> = s
            .split(|c: char| c == '-' || c == '_' || c == '.' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        if words.is_empty() {
            return Err("the code is empty".into());
        }
        if words
            .iter()
            .any(|w| !w.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            // The offending word is not shown: it is part of a secret.
            return Err(
                "the code has a character that is not a letter, digit, space or dash".into(),
            );
        }
        if words.iter().map(String::len).sum::<usize>() > 256 {
            return Err("the code is longer than 256 characters".into());
        }
        Ok(Code(words.join("-")))
    }

    /// The normalized code (the PAKE password).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its strength if every word came from the list, in bits (0 for
    /// words outside it: those are the chooser's to make strong).
    pub fn list_bits(&self) -> f64 {
        let n = self.0.split('-').count();
        let all_listed = self.0.split('-').all(|w| words().any(|l| l == w));
        match all_listed {
            true => n as f64 * (WORDS as f64).log2(),
            false => 0.0,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(..)")
    }
}
