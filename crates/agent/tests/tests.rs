//! Integration tests of the agent: one binary, a module per subject.

mod collectors;
mod enhance;
mod inprocess;
mod pure;
mod sdk;
mod seams;
