# Turns docs/openapi.json into a C source (run by CMake at build time:
# cmake -DSRC=<docs/openapi.json> -DOUT=<file.c> -P openapi_embed.cmake), so that
# GET /openapi.json serves the very document of the repository without reading a file at run
# time (gateway/openapi.c). Its ETag is the start of the file's SHA-256.
file(READ ${SRC} hex HEX)
file(SHA256 ${SRC} sum)
string(SUBSTRING ${sum} 0 20 etag)
string(LENGTH "${hex}" hexlen)
math(EXPR size "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){24})" "\\1\n    " bytes "${bytes}")
set(out "/* Generated from docs/openapi.json by gateway/openapi_embed.cmake: do not edit. */\n")
string(APPEND out "#include \"gateway/openapi.h\"\n\n")
string(APPEND out "static const unsigned char document[] = {\n    ${bytes}0x00};\n\n")
string(APPEND out "const unsigned char *const sb_openapi_document = document;\n")
string(APPEND out "const size_t sb_openapi_document_len = ${size};\n")
string(APPEND out "const char sb_openapi_etag[] = \"\\\"${etag}\\\"\";\n")
# Written only when it changed, so an unchanged document does not rebuild the library.
if(EXISTS ${OUT})
    file(READ ${OUT} old)
    if(old STREQUAL out)
        return()
    endif()
endif()
file(WRITE ${OUT} "${out}")
