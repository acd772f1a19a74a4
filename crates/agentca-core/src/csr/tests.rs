//! CSR tests (see the module docs).
