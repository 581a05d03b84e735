# Guest test: USERPTR memory kept between QBUFs is reused for the same
# memory, let go for other memory, and given back at STREAMOFF and close
# (userptr-reuse.c says how).
. /test.env
/extra/userptr-reuse "${VIDEO:-/dev/video0}"
