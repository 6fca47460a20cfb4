"""The web page served at `/`: plain ES modules and CSS from `static/`, no build step, no CDN.

The page is a client of the public API like any other (search, jobs, events, audio, models); this
package only serves its files, with a strict Content-Security-Policy.
"""
