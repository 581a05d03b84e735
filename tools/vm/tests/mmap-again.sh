# Guest test: a buffer mapped again right after munmap() maps, whatever
# runs first (mmap-again.c says how).
. /test.env
/extra/mmap-again "${VIDEO:-/dev/video0}" "${COUNT:-200}"
