"""Task environments of the armvla suite, registered with gymnasium by versioned id."""
