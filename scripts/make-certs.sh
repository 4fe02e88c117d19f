#!/bin/sh
# Make a cluster CA and per-host certificates for damselfly's mutual TLS (--tls-cert,
# --tls-key, --tls-ca), for tests and small clusters.
#
#   scripts/make-certs.sh DIR ca                 # DIR/ca.pem, DIR/ca.key (once per cluster)
#   scripts/make-certs.sh DIR host ID [ROLE]     # DIR/ID.pem, DIR/ID.key signed by DIR/ca
#
# ID is the host ID the host announces (the certificate's subject CN); ROLE is its subject
# OU: peer (default), seed, scheduler or manager (see src/common/tls_identity.h). Keys are
# EC P-256, written mode 0600. Certificates are valid for DAYS (env, default 365) days.
# The same thing by hand:
#   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
#       -subj "/CN=damselfly-ca" -keyout ca.key -out ca.pem \
#       -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
#   openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
#       -subj "/CN=host-1/OU=seed" -keyout host-1.key -out host-1.csr
#   openssl x509 -req -in host-1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
#       -extfile <(printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n') \
#       -out host-1.pem
set -eu
usage() { echo "usage: $0 DIR ca | $0 DIR host ID [peer|seed|scheduler|manager]" >&2; exit 2; }
[ $# -ge 2 ] || usage
dir=$1
days=${DAYS:-365}
mkdir -p "$dir"
umask 077
case $2 in
ca)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
        -subj "/CN=damselfly-ca" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 0644 "$dir/ca.pem"
    ;;
host)
    [ $# -ge 3 ] || usage
    id=$3
    role=${4:-peer}
    case $role in peer | seed | scheduler | manager) ;; *) usage ;; esac
    case $id in *[!A-Za-z0-9._:-]* | '' | .* | -*)
        echo "$0: invalid host ID: $id" >&2
        exit 2
        ;;
    esac
    [ -f "$dir/ca.pem" ] && [ -f "$dir/ca.key" ] || { echo "$0: no CA in $dir (run: $0 $dir ca)" >&2; exit 1; }
    ext="$dir/.$id.ext"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=$id/OU=$role" -keyout "$dir/$id.key" -out "$dir/$id.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$id.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -CAserial "$dir/ca.srl" -days "$days" -extfile "$ext" \
        -out "$dir/$id.pem" 2>/dev/null
    rm -f "$dir/$id.csr" "$ext"
    chmod 0644 "$dir/$id.pem"
    ;;
*) usage ;;
esac
