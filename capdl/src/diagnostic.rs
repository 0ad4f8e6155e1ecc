//! Diagnostics: errors located in a config file, rendered like rustc's.
//!
//! Every check in `capdl` reports through this module. A [`Diagnostic`]
//! carries the file name as people should read it, a 1-based line and
//! column (0 and 0 when the error concerns a whole file that could not be
//! read), a message in the domain's language and an optional help line
//! (usually "did you mean 'pong'?" from [`suggest`]). [`SourceMap`] holds the
//! text of every loaded file so that byte spans from the TOML parser become
//! line and column numbers; [`Diagnostics`] is the error type of loading,
//! holding every error found, sorted by file and position.

use std::fmt;
use std::ops::Range;

/// One error in a system description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as named on the command line or by an `include`.
    pub file: String,
    /// 1-based line; 0 when the error concerns the whole file.
    pub line: usize,
    /// 1-based column in characters; 0 when the error concerns the whole file.
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    /// Adds a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a help line when there is one.
    pub fn with_optional_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// `file:line:column` (or just `file`).
    pub fn location(&self) -> String {
        if self.line == 0 {
            self.file.clone()
        } else {
            format!("{}:{}:{}", self.file, self.line, self.column)
        }
    }

    /// `file:line:column: message`, and the help on a line of its own: the
    /// form for tools that print their own `error: ` before it (the build
    /// tool), where [`fmt::Display`] is rustc's form with its own.
    pub fn brief(&self) -> String {
        match &self.help {
            Some(help) => format!("{}: {}\n  = help: {help}", self.location(), self.message),
            None => format!("{}: {}", self.location(), self.message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "error: {}\n  --> {}",
            self.message,
            self.location()
        )?;
        if let Some(help) = &self.help {
            write!(formatter, "\n  = help: {help}")?;
        }
        Ok(())
    }
}

/// Every error found while loading a system, in file and position order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The errors.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many errors there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (a loaded system never returns an empty set).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every error in its [`Diagnostic::brief`] form, one after another.
    pub fn brief(&self) -> String {
        let lines: Vec<String> = self.0.iter().map(Diagnostic::brief).collect();
        lines.join("\n")
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.0 {
            writeln!(formatter, "{diagnostic}\n")?;
        }
        match self.0.len() {
            1 => write!(formatter, "error: the system description has 1 error"),
            count => write!(
                formatter,
                "error: the system description has {count} errors"
            ),
        }
    }
}

impl std::error::Error for Diagnostics {}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A place in a loaded file: the file's index in the [`SourceMap`] and a
/// byte range of its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spot {
    pub file: usize,
    pub span: Range<usize>,
}

/// One loaded file.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name diagnostics use.
    pub name: String,
    pub text: String,
}

/// The text of every file a system was loaded from.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    pub files: Vec<SourceFile>,
}

impl SourceMap {
    /// Adds a file and returns its index.
    pub fn add(&mut self, name: String, text: String) -> usize {
        self.files.push(SourceFile { name, text });
        self.files.len() - 1
    }

    /// The 1-based line and column of a byte offset in a file.
    pub fn position(&self, file: usize, offset: usize) -> (usize, usize) {
        line_column(&self.files[file].text, offset)
    }

    /// An error at a spot.
    pub fn error(&self, spot: &Spot, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.position(spot.file, spot.span.start);
        Diagnostic {
            file: self.files[spot.file].name.clone(),
            line,
            column,
            message: message.into(),
            help: None,
        }
    }
}

/// An error about a whole file (one that could not be read).
pub fn file_error(file: impl Into<String>, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: file.into(),
        line: 0,
        column: 0,
        message: message.into(),
        help: None,
    }
}

/// The edit distance between two strings in characters: insertions,
/// deletions, substitutions and transpositions of neighbours each cost one
/// (the "optimal string alignment" distance), so `pnog` is one edit from `pong`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            table[i * width + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (table[(i - 1) * width + j] + 1)
                    .min(table[i * width + j - 1] + 1)
                    .min(table[(i - 1) * width + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(table[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    table[a.len() * width + b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a likely
/// typo: one edit for words of up to three characters, otherwise two edits
/// or a third of the length, whichever is more. Ties go to the earliest
/// candidate.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = word.chars().count();
    let limit = if length <= 3 { 1 } else { (length / 3).max(2) };
    // A letter that only looks like an ASCII one counts as that letter, so
    // that 'pоng' (Cyrillic о) means 'pong' rather than 'ping'.
    let folded: String = word.chars().map(ascii_lookalike).collect();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = edit_distance(&folded, candidate).min(edit_distance(word, candidate));
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// "did you mean 'X'?" for the closest candidate, if any; when `word` has a
/// character that is not ASCII (a Cyrillic 'о' that looks like 'o'), the
/// help says which.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(word, candidates).map(|candidate| match non_ascii(word) {
        Some(note) => format!("did you mean '{candidate}'? ({note})"),
        None => format!("did you mean '{candidate}'?"),
    })
}

/// "'pоng' has the non-ASCII character 'о' (U+043E, drawn like 'o') at
/// position 2" for the
/// first character of `word` that is not ASCII, if any.
pub fn non_ascii(word: &str) -> Option<String> {
    let (position, character) = word
        .chars()
        .enumerate()
        .find(|(_, character)| !character.is_ascii())?;
    Some(format!(
        "'{word}' has the non-ASCII character {} at position {}",
        describe_character(character),
        position + 1
    ))
}

/// `'о' (U+043E, drawn like 'o')`: a character named so that people can
/// find it, with the ASCII letter it looks like if it looks like one.
pub fn describe_character(character: char) -> String {
    let code = u32::from(character);
    if character.is_control() {
        // Never the character itself: a newline or escape in a message
        // would break the line it is on.
        return format!("'{}' (U+{code:04X})", character.escape_default());
    }
    match ascii_lookalike(character) {
        ascii if ascii != character => {
            format!("'{character}' (U+{code:04X}, drawn like '{ascii}')")
        }
        _ => format!("'{character}' (U+{code:04X})"),
    }
}

/// The ASCII letter a Cyrillic or Greek lowercase letter is drawn like
/// (`о` is `o`), or the character itself.
fn ascii_lookalike(character: char) -> char {
    const LOOKALIKES: [(char, char); 16] = [
        ('\u{430}', 'a'), // Cyrillic а
        ('\u{441}', 'c'), // Cyrillic с
        ('\u{435}', 'e'), // Cyrillic е
        ('\u{456}', 'i'), // Cyrillic і
        ('\u{458}', 'j'), // Cyrillic ј
        ('\u{43e}', 'o'), // Cyrillic о
        ('\u{440}', 'p'), // Cyrillic р
        ('\u{455}', 's'), // Cyrillic ѕ
        ('\u{445}', 'x'), // Cyrillic х
        ('\u{443}', 'y'), // Cyrillic у
        ('\u{3b1}', 'a'), // Greek α
        ('\u{3b9}', 'i'), // Greek ι
        ('\u{3ba}', 'k'), // Greek κ
        ('\u{3bf}', 'o'), // Greek ο
        ('\u{3c1}', 'p'), // Greek ρ
        ('\u{3bd}', 'v'), // Greek ν
    ];
    LOOKALIKES
        .iter()
        .find(|(lookalike, _)| *lookalike == character)
        .map_or(character, |(_, ascii)| *ascii)
}

/// The 1-based line and column (in characters) of byte `offset` in
/// `text`; an offset past the end or inside a character is moved back to
/// the nearest character boundary. The build tool locates its own config
/// errors with it too.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |rest| rest.chars().count())
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("pong", "pong"), 0);
        assert_eq!(edit_distance("pnog", "pong"), 1);
        assert_eq!(edit_distance("pnog", "ping"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions_pick_the_closest_likely_typo() {
        assert_eq!(
            suggest("pnog", ["ping", "pong"]),
            Some("did you mean 'pong'?".into())
        );
        assert_eq!(
            suggest("pongg", ["ping", "pong"]),
            Some("did you mean 'pong'?".into())
        );
        assert_eq!(suggest("supervisor", ["hello"]), None);
        assert_eq!(
            suggest("prioity", ["program", "priority"]),
            Some("did you mean 'priority'?".into())
        );
    }

    #[test]
    fn a_close_name_with_a_lookalike_letter_says_so() {
        assert_eq!(
            suggest("p\u{43e}ng", ["ping", "pong"]),
            Some(
                "did you mean 'pong'? ('p\u{43e}ng' has the non-ASCII character '\u{43e}' (U+043E, drawn like 'o') at position 2)"
                    .into()
            )
        );
        assert_eq!(non_ascii("pong"), None);
    }

    #[test]
    fn positions_are_one_based_characters() {
        let mut map = SourceMap::default();
        let file = map.add("a.toml".into(), "ab\n\u{e9}x = 1\n".into());
        assert_eq!(map.position(file, 0), (1, 1));
        assert_eq!(map.position(file, 3), (2, 1));
        assert_eq!(map.position(file, 5), (2, 2));
        assert_eq!(
            map.position(file, 4),
            (2, 1),
            "inside a character rounds down"
        );
        assert_eq!(map.position(file, 999), (3, 1));
    }

    #[test]
    fn renders_like_rustc() {
        let diagnostic = Diagnostic {
            file: "a.toml".into(),
            line: 3,
            column: 7,
            message: "queue 'requests': unknown receiver 'pnog'".into(),
            help: Some("did you mean 'pong'?".into()),
        };
        assert_eq!(
            diagnostic.to_string(),
            "error: queue 'requests': unknown receiver 'pnog'\n  --> a.toml:3:7\n  = help: did you mean 'pong'?"
        );
        assert_eq!(
            diagnostic.brief(),
            "a.toml:3:7: queue 'requests': unknown receiver 'pnog'\n  = help: did you mean 'pong'?"
        );
        let whole = file_error("b.toml", "cannot read");
        assert_eq!(
            Diagnostics(vec![whole.clone(), diagnostic]).brief(),
            "b.toml: cannot read\na.toml:3:7: queue 'requests': unknown receiver 'pnog'\n  = help: did you mean 'pong'?"
        );
        assert_eq!(whole.to_string(), "error: cannot read\n  --> b.toml");
        assert_eq!(
            Diagnostics(vec![whole]).to_string(),
            "error: cannot read\n  --> b.toml\n\nerror: the system description has 1 error"
        );
    }
}
