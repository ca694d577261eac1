//! Add-ons (product.md §7). Being written.
