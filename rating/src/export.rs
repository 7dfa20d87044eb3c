//! What leaves the store as CSV for a finance clerk's spreadsheet. A cell that starts with
//! `=`, `+`, `-` or `@` (or a tab or CR) is read by Excel, LibreOffice and Google Sheets as a
//! formula, and call records carry text a caller chose (the calling number of a pinless call,
//! a RADIUS gateway's conference id and cause): such a cell is written with a leading `'`, which
//! the spreadsheet shows as text (OWASP's advice against CSV injection).

use std::borrow::Cow;

/// `text` as a cell no spreadsheet runs.
pub fn cell(text: &str) -> Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_written_as_text() {
        for f in [
            "=HYPERLINK(\"http://x\")",
            "+1+1",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
        ] {
            assert!(cell(f).starts_with('\''), "{f}");
        }
        for plain in ["4085551234", "5555233", "q850:16", "", "a=b"] {
            assert_eq!(cell(plain), plain);
        }
    }
}
