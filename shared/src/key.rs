//! Keys and their model (product.md §5). Being written.
