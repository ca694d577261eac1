//! Authorizer actions (being written).
