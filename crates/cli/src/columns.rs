//! Tables as the CLI prints them (comfy-table): aligned columns, two spaces apart, no borders.
//!
//! The same on a terminal and in a pipe, so a script may cut columns (`awk '{print $1}'`) and a
//! test may find a row by its first word; only colour (`output::Paint`) differs, and cells may
//! carry it without breaking the alignment (comfy-table's `custom_styling` counts what shows).

use std::fmt;

use comfy_table::{CellAlignment, Table};

/// A table under construction; `Display` renders it without trailing spaces.
#[derive(Debug)]
pub struct Columns {
    table: Table,
    right: Vec<usize>,
}

impl Columns {
    /// A table with this header row; none (an empty header) for a list of labels and values.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        let mut table = Table::new();
        table.load_style(comfy_table::presets::NOTHING);
        let header: Vec<String> = header.into_iter().map(Into::into).collect();
        if !header.is_empty() {
            table.set_header(header);
        }
        let mut columns = Self { table, right: Vec::new() };
        columns.lay_out();
        columns
    }

    /// Right-aligns these columns (counts, durations).
    pub fn right(mut self, columns: &[usize]) -> Self {
        self.right.extend_from_slice(columns);
        self.lay_out();
        self
    }

    /// Adds a row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        self.table.add_row(cells.into_iter().map(Into::into).collect::<Vec<String>>());
        self.lay_out();
        self
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.table.row_count() == 0
    }

    /// A row may add columns: every column gets the gap and its alignment.
    fn lay_out(&mut self) {
        for (i, column) in self.table.column_iter_mut().enumerate() {
            column.set_padding((0, 2));
            if self.right.contains(&i) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
}

impl fmt::Display for Columns {
    /// The lines, each ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.table.lines() {
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_two_spaces_apart_without_borders_or_trailing_space() {
        let mut t = Columns::new(["NAME", "VMS", "STATE"]).right(&[1]);
        t.row(["vm-00001", "3", "ready"]).row(["a-much-longer-name", "12", ""]);
        assert_eq!(
            t.to_string(),
            "NAME                VMS  STATE\nvm-00001              3  ready\na-much-longer-name   12\n"
        );
        let mut painted = Columns::new(Vec::<String>::new());
        painted.row(["\x1b[1mvault\x1b[0m", "x"]).row(["logs", "y"]);
        assert_eq!(painted.to_string(), "\x1b[1mvault\x1b[0m  x\nlogs   y\n", "colour takes no width");
    }
}
