//! VMKFS storage engine (being written).
