//! The core's boot command line (`run --cmdline`, a scenario's `cmdline`),
//! checked before anything is built or booted.
//!
//! The line must reach the core byte for byte on both boot paths. QEMU's
//! `-append` passes it unchanged, but on the Bochs path it is part of a
//! line of GRUB's script (`grub.cfg`, see [`crate::bochs::grub_config`]):
//! a newline there starts a new command, quotes, `\`, `$`, `;`, `#` and
//! braces mean something, and GRUB re-joins the words with single spaces.
//! So [`check`] allows only words of ASCII letters, digits and
//! [`PUNCTUATION`], separated by single spaces, and at most
//! [`COMMAND_LINE_MAX`] bytes, all the core keeps. Each refusal names the
//! character and its column, or the length and the limit.

use microvisor_abi::COMMAND_LINE_MAX;

/// The punctuation a command line may hold besides letters, digits and
/// single spaces.
pub const PUNCTUATION: &str = "-_.,:=/+@%";

/// What a command line may hold, for error messages.
fn allowed() -> String {
    let marks: Vec<String> = PUNCTUATION.chars().map(String::from).collect();
    format!(
        "use ASCII letters, digits, single spaces and {}",
        marks.join(" ")
    )
}

/// Checks a boot command line; the error says what is wrong and where
/// (columns count bytes from 1).
pub fn check(line: &str) -> Result<(), String> {
    if line.len() > COMMAND_LINE_MAX {
        return Err(format!(
            "the boot command line is {} bytes long; the core keeps at most {COMMAND_LINE_MAX} \
             (microvisor_abi::COMMAND_LINE_MAX)",
            line.len()
        ));
    }
    let mut previous = None;
    for (index, character) in line.char_indices() {
        let column = index + 1;
        let refused = match character {
            ' ' if index == 0 => Some("a space at its start".to_string()),
            ' ' if previous == Some(' ') => Some("a second space in a row".to_string()),
            ' ' if index + 1 == line.len() => Some("a space at its end".to_string()),
            ' ' => None,
            _ if character.is_ascii_alphanumeric() || PUNCTUATION.contains(character) => None,
            '\n' => Some("a newline".to_string()),
            '\r' => Some("a carriage return".to_string()),
            '\t' => Some("a tab".to_string()),
            _ if character.is_control() => Some(format!(
                "the control character U+{:04X}",
                u32::from(character)
            )),
            _ if !character.is_ascii() => Some(format!(
                "the non-ASCII character '{character}' (U+{:04X})",
                u32::from(character)
            )),
            _ => Some(format!("'{character}'")),
        };
        if let Some(refused) = refused {
            let why = match character {
                ' ' => "GRUB joins words with one space",
                '\n' | '\r' => "it must be one line",
                _ if character.is_ascii() && !character.is_control() => {
                    "GRUB's script would change it on the --bochs path"
                }
                _ => "the core takes plain ASCII words",
            };
            return Err(format!(
                "the boot command line has {refused} at column {column} ({why}): {}",
                allowed()
            ));
        }
        previous = Some(character);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(line: &str) -> String {
        check(line).unwrap_err()
    }

    #[test]
    fn plain_words_up_to_the_limit_pass() {
        for line in [
            "",
            "selftest=core-fault",
            "a=1 b=x,y path=/boot/x.img rate=10% user@host k:v +x",
        ] {
            assert_eq!(check(line), Ok(()), "{line}");
        }
        let full = format!("pad={} selftest=core-fault", "x".repeat(232));
        assert_eq!(full.len(), COMMAND_LINE_MAX);
        assert_eq!(check(&full), Ok(()));
    }

    #[test]
    fn a_line_longer_than_the_core_keeps_is_refused() {
        let long = "x".repeat(COMMAND_LINE_MAX + 1);
        assert_eq!(
            refusal(&long),
            "the boot command line is 257 bytes long; the core keeps at most 256 \
             (microvisor_abi::COMMAND_LINE_MAX)"
        );
        assert!(refusal(&"y".repeat(5000)).contains("is 5000 bytes long"));
    }

    #[test]
    fn control_characters_are_refused() {
        assert_eq!(
            refusal("selftest=x\nboot"),
            "the boot command line has a newline at column 11 (it must be one line): use ASCII \
             letters, digits, single spaces and - _ . , : = / + @ %"
        );
        assert!(refusal("a\rb").contains("a carriage return at column 2"));
        assert!(refusal("a\tb").contains("a tab at column 2"));
        assert!(refusal("a\u{7f}").contains("the control character U+007F at column 2"));
        assert!(refusal("\0").contains("the control character U+0000 at column 1"));
    }

    #[test]
    fn non_ascii_and_grub_script_characters_are_refused() {
        assert!(
            refusal("mode=héllo").starts_with(
                "the boot command line has the non-ASCII character 'é' (U+00E9) at column 7 \
                 (the core takes plain ASCII words)"
            ),
            "{}",
            refusal("mode=héllo")
        );
        for (line, character) in [
            ("a=$b", "'$'"),
            ("a;reboot", "';'"),
            ("a=\"b c\"", "'\"'"),
            ("a='b'", "'''"),
            ("a\\b", "'\\'"),
            ("a#b", "'#'"),
            ("{a}", "'{'"),
            ("a|b", "'|'"),
            ("a*", "'*'"),
        ] {
            let message = refusal(line);
            assert!(
                message.starts_with(&format!("the boot command line has {character} at column")),
                "{line}: {message}"
            );
            assert!(
                message.contains("GRUB's script would change it"),
                "{message}"
            );
        }
    }

    #[test]
    fn spaces_must_separate_words_singly() {
        assert!(refusal(" a").contains("a space at its start at column 1"));
        assert!(refusal("a  b").contains("a second space in a row at column 3"));
        assert!(refusal("a b ").contains("a space at its end at column 4"));
        assert!(refusal("a  b").contains("GRUB joins words with one space"));
    }
}
