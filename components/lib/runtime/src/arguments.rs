//! A component's arguments, read strictly: every word of the argument
//! string (`args` in the system file, e.g. `"limit_ms=500 restarts=2"`)
//! must be `key=value` with a key the component names, each key at most
//! once, and each value must be what its key takes.
//!
//! A component lists its keys once, `start.arguments(&["limit_ms",
//! "restarts"])`, and reads typed values from the checked view
//! ([`Arguments::number`], [`Arguments::choice`], [`Arguments::text`]). A
//! mistake is an [`ArgumentError`] that names the word, the key and what was
//! expected (the keys, for an unknown one), so `cout=5` or `count=abc` is
//! reported instead of running the default. [`OrExit::or_exit`] prints it
//! and ends the component with [`EXIT_BAD_ARGUMENT`]; a non-zero exit makes
//! the system's verdict a failure.
//!
//! Words are separated by spaces (several in a row count as one). Asking
//! for a key the component did not list is a bug in the component, and
//! panics.

use core::fmt;
use core::str::FromStr;

/// The exit code of a component ended by a bad argument.
pub const EXIT_BAD_ARGUMENT: i32 = 2;

/// What a key's value must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// A whole number from 0 to `max`.
    Number { max: u64 },
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// Why an argument string was refused. Every variant carries the word
/// (`key=value`) it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgumentError<'a> {
    /// A word without `=`.
    NotKeyValue { word: &'a str, known: &'a [&'a str] },
    /// A key the component does not take.
    UnknownKey {
        word: &'a str,
        key: &'a str,
        known: &'a [&'a str],
    },
    /// A key given a second time.
    Repeated { word: &'a str, key: &'a str },
    /// A value its key does not take.
    BadValue {
        word: &'a str,
        value: &'a str,
        expected: Expected,
    },
}

/// "the keys are: a, b" or "it takes no arguments".
struct Keys<'a>(&'a [&'a str]);

impl fmt::Display for Keys<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return formatter.write_str("this component takes no arguments");
        }
        formatter.write_str("the keys are: ")?;
        list(formatter, self.0)
    }
}

fn list(formatter: &mut fmt::Formatter<'_>, words: &[&str]) -> fmt::Result {
    for (index, word) in words.iter().enumerate() {
        if index > 0 {
            formatter.write_str(", ")?;
        }
        formatter.write_str(word)?;
    }
    Ok(())
}

impl fmt::Display for ArgumentError<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotKeyValue { word, known } => write!(
                formatter,
                "argument '{word}' is not key=value ({})",
                Keys(known)
            ),
            Self::UnknownKey { word, key, known } => write!(
                formatter,
                "argument '{word}': unknown key '{key}' ({})",
                Keys(known)
            ),
            Self::Repeated { word, key } => {
                write!(formatter, "argument '{word}': '{key}' is given twice")
            }
            Self::BadValue {
                word,
                value,
                expected,
            } => {
                write!(formatter, "argument '{word}': '{value}' is not ")?;
                match expected {
                    Expected::Number { max } => write!(formatter, "a whole number from 0 to {max}"),
                    Expected::OneOf(choices) => {
                        formatter.write_str("one of ")?;
                        list(formatter, choices)
                    }
                }
            }
        }
    }
}

/// A number type an argument can hold.
pub trait Number: FromStr + Copy {
    /// Its largest value, for messages.
    const MAX: u64;
}

impl Number for u32 {
    const MAX: u64 = u32::MAX as u64;
}

impl Number for u64 {
    const MAX: u64 = u64::MAX;
}

/// An argument string whose every word is `key=value` with a known key,
/// each key at most once.
#[derive(Clone, Copy, Debug)]
pub struct Arguments<'a> {
    args: &'a str,
    known: &'a [&'a str],
}

impl<'a> Arguments<'a> {
    /// Checks `args` against the keys `known`.
    pub fn parse(args: &'a str, known: &'a [&'a str]) -> Result<Self, ArgumentError<'a>> {
        let words = || args.split(' ').filter(|word| !word.is_empty());
        for (index, word) in words().enumerate() {
            let Some((key, _)) = word.split_once('=') else {
                return Err(ArgumentError::NotKeyValue { word, known });
            };
            if !known.contains(&key) {
                return Err(ArgumentError::UnknownKey { word, key, known });
            }
            let earlier = words()
                .take(index)
                .any(|other| other.split_once('=').is_some_and(|(k, _)| k == key));
            if earlier {
                return Err(ArgumentError::Repeated { word, key });
            }
        }
        Ok(Self { args, known })
    }

    /// The word and value of `key`, if given.
    fn find(&self, key: &str) -> Option<(&'a str, &'a str)> {
        assert!(
            self.known.contains(&key),
            "argument '{key}' is read but not among the component's keys"
        );
        self.args.split(' ').find_map(|word| {
            let (k, value) = word.split_once('=')?;
            (k == key).then_some((word, value))
        })
    }

    /// The value of `key` as it was written, if given.
    pub fn text(&self, key: &str) -> Option<&'a str> {
        self.find(key).map(|(_, value)| value)
    }

    /// The whole number `key` holds, or `default` when it is not given.
    pub fn number<T: Number>(&self, key: &str, default: T) -> Result<T, ArgumentError<'a>> {
        self.optional_number(key)
            .map(|number| number.unwrap_or(default))
    }

    /// The whole number `key` holds, if given.
    pub fn optional_number<T: Number>(&self, key: &str) -> Result<Option<T>, ArgumentError<'a>> {
        let Some((word, value)) = self.find(key) else {
            return Ok(None);
        };
        // FromStr would take a leading '+'; a number here is digits only.
        let digits = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
        value
            .parse()
            .ok()
            .filter(|_| digits)
            .map(Some)
            .ok_or(ArgumentError::BadValue {
                word,
                value,
                expected: Expected::Number { max: T::MAX },
            })
    }

    /// The word `key` holds, one of `choices`, or `default` when it is not
    /// given.
    pub fn choice(
        &self,
        key: &str,
        choices: &'static [&'static str],
        default: &'static str,
    ) -> Result<&'a str, ArgumentError<'a>> {
        match self.find(key) {
            None => Ok(default),
            Some((_, value)) if choices.contains(&value) => Ok(value),
            Some((word, value)) => Err(ArgumentError::BadValue {
                word,
                value,
                expected: Expected::OneOf(choices),
            }),
        }
    }
}

/// Ends the component on a bad argument.
pub trait OrExit<T> {
    /// The value, or: print the error and exit with [`EXIT_BAD_ARGUMENT`].
    fn or_exit(self) -> T;
}

impl<T> OrExit<T> for Result<T, ArgumentError<'_>> {
    fn or_exit(self) -> T {
        match self {
            Ok(value) => value,
            Err(error) => {
                crate::println!("{error}");
                crate::syscall::exit(EXIT_BAD_ARGUMENT)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["limit_ms", "restarts", "mode"];

    fn refused(args: &str) -> String {
        Arguments::parse(args, KEYS).unwrap_err().to_string()
    }

    #[test]
    fn known_keys_and_typed_values_are_read() {
        let arguments = Arguments::parse(" limit_ms=500  restarts=2 mode=fast", KEYS).unwrap();
        assert_eq!(arguments.number("limit_ms", 0u64), Ok(500));
        assert_eq!(arguments.number("restarts", 3u32), Ok(2));
        assert_eq!(arguments.optional_number::<u32>("restarts"), Ok(Some(2)));
        assert_eq!(arguments.text("mode"), Some("fast"));
        assert_eq!(
            arguments.choice("mode", &["slow", "fast"], "slow"),
            Ok("fast")
        );
        let empty = Arguments::parse("", KEYS).unwrap();
        assert_eq!(empty.number("restarts", 3u32), Ok(3));
        assert_eq!(empty.optional_number::<u32>("restarts"), Ok(None));
        assert_eq!(empty.text("mode"), None);
        assert_eq!(empty.choice("mode", &["slow"], "slow"), Ok("slow"));
        assert!(Arguments::parse("", &[]).is_ok());
    }

    #[test]
    fn unknown_keys_and_malformed_words_are_refused_with_the_keys() {
        assert_eq!(
            refused("limits_ms=5"),
            "argument 'limits_ms=5': unknown key 'limits_ms' (the keys are: limit_ms, restarts, mode)"
        );
        assert_eq!(
            refused("restarts=1 500"),
            "argument '500' is not key=value (the keys are: limit_ms, restarts, mode)"
        );
        assert_eq!(
            refused("restarts=1 restarts=2"),
            "argument 'restarts=2': 'restarts' is given twice"
        );
        assert_eq!(
            Arguments::parse("count=3", &[]).unwrap_err().to_string(),
            "argument 'count=3': unknown key 'count' (this component takes no arguments)"
        );
    }

    #[test]
    fn values_of_the_wrong_type_are_refused_with_what_was_expected() {
        let arguments =
            Arguments::parse("limit_ms=abc restarts=4294967296 mode=quick", KEYS).unwrap();
        assert_eq!(
            arguments.number("limit_ms", 0u64).unwrap_err().to_string(),
            "argument 'limit_ms=abc': 'abc' is not a whole number from 0 to 18446744073709551615"
        );
        assert_eq!(
            arguments.number("restarts", 3u32).unwrap_err().to_string(),
            "argument 'restarts=4294967296': '4294967296' is not a whole number from 0 to 4294967295"
        );
        assert_eq!(
            arguments
                .choice("mode", &["slow", "fast"], "slow")
                .unwrap_err()
                .to_string(),
            "argument 'mode=quick': 'quick' is not one of slow, fast"
        );
        for value in ["", "+5", "-1", "5ms", "0x10"] {
            let args = format!("limit_ms={value}");
            let arguments = Arguments::parse(&args, KEYS).unwrap();
            assert!(arguments.number("limit_ms", 0u64).is_err(), "{value:?}");
        }
    }

    #[test]
    #[should_panic(expected = "argument 'limit' is read but not among the component's keys")]
    fn reading_an_unlisted_key_is_a_bug() {
        let _ = Arguments::parse("", KEYS).unwrap().text("limit");
    }
}
