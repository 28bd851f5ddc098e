# Sourced by the fetch scripts (bash).
#
# find_pip SCRIPT WHAT HINT: sets the array pip_cmd to a working pip
# (python3 -m pip, else pip3), or says what is missing and returns 1.
# WHAT names what pip was to download, HINT how to do without it.
find_pip() {
    pip_cmd=()
    if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
        pip_cmd=(python3 -m pip)
    elif command -v pip3 >/dev/null; then
        pip_cmd=(pip3)
    else
        echo "$1: needs pip (python3 -m pip or pip3) to download $2 from PyPI; none found." >&2
        echo "$1: install python3-pip, or $3." >&2
        return 1
    fi
}
