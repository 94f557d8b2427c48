package config

import (
	"errors"
	"io"
	"testing"
	"time"
)

// TestAuditSettings: the audit retention, failure mode and checkpoint
// settings load from flags and BULWARK_* variables, and bad values name
// their field.
func TestAuditSettings(t *testing.T) {
	cfg, err := Load([]string{"--audit-max-files", "3", "--audit-checkpoint-records", "50"},
		[]string{"BULWARK_AUDIT_FAILURE_MODE=fail_closed", "BULWARK_AUDIT_CHECKPOINT_INTERVAL=250ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AuditMaxFiles != 3 || cfg.AuditFailureMode != "fail_closed" || cfg.AuditCheckpointInterval != 250*time.Millisecond ||
		cfg.AuditCheckpointRecords != 50 {
		t.Fatalf("cfg = %+v", cfg)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		field string
	}{
		{"no rotated file kept", []string{"--audit-max-files", "0"}, "audit_max_files"},
		{"unknown failure mode", []string{"--audit-failure-mode", "maybe"}, "audit_failure_mode"},
		{"zero checkpoint interval", []string{"--audit-checkpoint-interval", "0s"}, "audit_checkpoint_interval"},
		{"zero checkpoint records", []string{"--audit-checkpoint-records", "0"}, "audit_checkpoint_records"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, nil, io.Discard)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError for %s", err, tc.field)
			}
		})
	}
}
