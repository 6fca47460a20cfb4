// Live dictation — the place for it on the page, filled in by the live-mode issue.
//
// A live session will be a job like any other (kind "live"): it appears in the Jobs list and opens
// in the Transcript view. setupLive() returns null until the server offers a live endpoint.

export function setupLive() {
  return null;
}
