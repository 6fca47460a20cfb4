// Speakers (diarization) — the place for them on the page, filled in by the diarization issue.
//
// speakerFields(container): options for the upload form (none until the server offers diarization).
// speakerLabel(segment): the label shown before a segment, or null when the segment names no speaker.

export function speakerFields(container) {
  container.hidden = true;
}

export function speakerLabel(segment) {
  return segment && typeof segment.speaker === "string" && segment.speaker ? segment.speaker : null;
}
