// Package masking applies per-grant field masking and row filters to Kafka
// records.
//
// Rules (filter.MaskRule) are compiled per schema id into a Plan that masks
// an Avro binary value by walking it and copying the untouched bytes, with
// no decoding into maps and no allocation; JSON values use the same paths
// and strategies. RewriteBatches rewrites one partition's record batches
// (decompress, transform, recompress, new lengths and CRC) keeping every
// batch-level field. Filter plugs both into the proxy for Fetch responses
// and Produce requests, with the failure policy that nothing is ever
// delivered in clear. See docs/masking.md.
package masking
