//! Serf's output shapes: `columnize` tables (two spaces between padded
//! columns) and Go-style JSON (2-space indent).

/// Aligns rows into columns separated by two spaces; the last column is
/// not padded. Serf trims the whole text, so trailing glue on the last
/// line disappears; so it does here.
pub fn columnize(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        lines.push(line);
    }
    lines.join("\n").trim().to_string()
}

/// Pretty JSON as Go's `json.MarshalIndent(v, "", "  ")` prints it
/// (serde's pretty printer uses the same 2-space layout).
pub fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("Encoding error: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_pad_to_the_widest_cell_with_two_spaces() {
        let rows = vec![
            vec!["xa".into(), "127.0.0.1:1".into(), "alive".into(), "".into()],
            vec![
                "xlonger".into(),
                "127.0.0.1:22".into(),
                "alive".into(),
                "a=b".into(),
            ],
        ];
        assert_eq!(
            columnize(&rows),
            "xa       127.0.0.1:1   alive  \nxlonger  127.0.0.1:22  alive  a=b"
        );
    }
}
