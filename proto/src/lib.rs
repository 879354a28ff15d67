//! Sans-IO cluster protocol (work in progress).
