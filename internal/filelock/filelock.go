// Package filelock takes exclusive advisory locks (flock) on files, so that
// two processes never rewrite or append to the same file at once: the audit
// writer holds one on its log for its whole life, and every keys-file
// writer holds one for each update. It is the one place that knows how
// flock is called and what its errors mean.
package filelock
