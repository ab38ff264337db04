"""A minimal RDP client on raw sockets, for load, leak and hostile-client
tests: cheap enough (a TLS handshake and a few PDUs, no FreeRDP) to make
thousands of connections, and able to stop at any step.

The sequence is the one a client uses against a TLS-only server (MS-RDPBCGR
1.3.1.1): X.224 Connection Request with RDP_NEG_REQ (PROTOCOL_SSL), TLS, MCS
Connect Initial carrying a GCC Conference Create Request (core and security
data, no static channels), Erect Domain, Attach User, Channel Join of the
user and I/O channels, Client Info PDU with the user name; then the server's
PDUs are read until a Server Redirection PDU (the target address or routing
token is returned), a Set Error Info PDU followed by the close (a refusal),
or the close.

    res = redirect("127.0.0.1", port, "alice")
    res.redirected, res.address, res.token, res.errinfo, res.closed
"""
import socket
import ssl
import struct

PROTOCOL_RDP, PROTOCOL_SSL, PROTOCOL_HYBRID = 0, 1, 2
IO_CHANNEL = 1003
MCS_BASE = 1001

# Server PDUs
PDUTYPE_DATA = 0x7
PDUTYPE_SERVER_REDIR = 0xA
PDUTYPE2_SET_ERROR_INFO = 0x2F
SEC_LICENSE_PKT = 0x0080
SEC_REDIRECTION_PKT = 0x0400
LB_TARGET_NET_ADDRESS = 0x1
LB_LOAD_BALANCE_INFO = 0x2


class RdpError(Exception):
    pass


def tpkt(payload):
    return struct.pack(">BBH", 3, 0, 4 + len(payload)) + payload


def x224_request(cookie=None, protocols=PROTOCOL_SSL, neg=True):
    """The bytes of a Connection Request: an optional 'Cookie: mstshash=...'
    line (or any routing token given with its prefix) and an RDP_NEG_REQ."""
    body = b""
    if cookie is not None:
        if isinstance(cookie, str):
            cookie = f"Cookie: mstshash={cookie}\r\n".encode()
        body += cookie
    if neg:
        body += struct.pack("<BBHI", 1, 0, 8, protocols)
    x224 = bytes([6 + len(body), 0xE0, 0, 0, 0, 0, 0]) + body
    return tpkt(x224)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def recv_tpkt(sock):
    head = recv_exact(sock, 4)
    if head[0] != 3:
        raise RdpError(f"not a TPKT header: {head.hex()}")
    length = struct.unpack(">H", head[2:4])[0]
    if length < 4:
        raise RdpError(f"bad TPKT length {length}")
    return recv_exact(sock, length - 4)


def ber_len(n):
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82]) + struct.pack(">H", n)


def ber_int(v):
    if v < 0x100:
        return b"\x02\x01" + bytes([v])
    if v < 0x10000:
        return b"\x02\x02" + struct.pack(">H", v)
    return b"\x02\x03" + v.to_bytes(3, "big")


def per_len(n):
    return bytes([n]) if n < 0x80 else struct.pack(">H", 0x8000 | n)


def domain_params(*vals):
    body = b"".join(ber_int(v) for v in vals)
    return b"\x30" + ber_len(len(body)) + body


def gcc_conference_create_request(client_name="rawrdp", cluster_flags=None):
    """client_name: a str (up to 15 characters, as clients send it) or the
    clientName field's 32 bytes themselves (bytes: any UTF-16LE, no
    terminator needed)."""
    core = struct.pack("<IHHHHII", 0x00080004, 1024, 768, 0xCA01, 0xAA03, 0x409, 2600)
    if isinstance(client_name, bytes):
        core += client_name[:32].ljust(32, b"\0")
    else:
        core += client_name.encode("utf-16-le")[:30].ljust(32, b"\0")
    core += struct.pack("<III", 4, 0, 12) + b"\0" * 64
    # postBeta2ColorDepth, clientProductId, serialNumber, highColorDepth,
    # supportedColorDepths, earlyCapabilityFlags (SUPPORT_ERRINFO_PDU)
    core += struct.pack("<HHIHHH", 0xCA01, 1, 0, 16, 0x000F, 0x0001)
    blocks = struct.pack("<HH", 0xC001, 4 + len(core)) + core
    blocks += struct.pack("<HHII", 0xC002, 12, 0, 0)
    if cluster_flags is not None:	# CS_CLUSTER: Flags, RedirectedSessionID
        blocks += struct.pack("<HHII", 0xC004, 12, cluster_flags, 0)
    ud = b"\x00\x08\x00\x10\x00\x01\xc0\x00Duca" + per_len(len(blocks)) + blocks
    return b"\x00\x05\x00\x14\x7c\x00\x01" + per_len(len(ud)) + ud


def mcs_connect_initial(cluster_flags=None, client_name="rawrdp"):
    gcc = gcc_conference_create_request(client_name, cluster_flags)
    body = (b"\x04\x01\x01" + b"\x04\x01\x01" + b"\x01\x01\xff" +
            domain_params(34, 2, 0, 1, 0, 1, 65535, 2) +
            domain_params(1, 1, 1, 1, 0, 1, 1056, 2) +
            domain_params(65535, 64535, 65535, 1, 0, 1, 65535, 2) +
            b"\x04" + ber_len(len(gcc)) + gcc)
    return b"\x7f\x65" + ber_len(len(body)) + body


def x224_data(payload):
    return tpkt(b"\x02\xf0\x80" + payload)


def utf16z(s):
    return s.encode("utf-16-le") + b"\0\0"


def client_info(user, domain="", password=""):
    flags = 0x1 | 0x2 | 0x10 | 0x20 | 0x100	# MOUSE, DISABLECTRLALTDEL, UNICODE, ...
    d, u, p = (s.encode("utf-16-le") for s in (domain, user, password))
    info = struct.pack("<IIHHHHH", 0, flags, len(d), len(u), len(p), 0, 0)
    info += d + b"\0\0" + u + b"\0\0" + p + b"\0\0" + b"\0\0" + b"\0\0"
    addr, cdir = utf16z("127.0.0.1"), utf16z("C:\\rawrdp")
    info += struct.pack("<HH", 2, len(addr)) + addr + struct.pack("<H", len(cdir)) + cdir
    return struct.pack("<HH", 0x0040, 0) + info	# SEC_INFO_PKT


class Result:
    def __init__(self):
        self.redirected = False
        self.address = None
        self.token = None
        self.errinfo = None
        self.closed = False
        self.license = False

    def __repr__(self):
        return (f"Result(redirected={self.redirected}, address={self.address!r}, "
                f"token={self.token!r}, errinfo={self.errinfo}, closed={self.closed})")


class Client:
    """One connection; each step may be called alone (hostile tests stop
    anywhere)."""

    def __init__(self, host, port, timeout=10.0, source=None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = None
        self.initiator = None

    def close(self):
        for s in (self.tls, self.sock):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def x224(self, cookie=None, protocols=PROTOCOL_SSL):
        """Sends the Connection Request; returns the selected protocol, or
        raises RdpError with the failure code of an RDP_NEG_FAILURE."""
        self.sock.sendall(x224_request(cookie, protocols))
        cc = recv_tpkt(self.sock)
        if len(cc) < 7 or cc[1] != 0xD0:
            raise RdpError(f"not a Connection Confirm: {cc.hex()}")
        if len(cc) >= 15:
            kind, _, _, value = struct.unpack("<BBHI", cc[7:15])
            if kind == 3:
                raise RdpError(f"negotiation failure {value}")
            if kind == 2:
                return value
        return PROTOCOL_RDP

    def start_tls(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.tls = ctx.wrap_socket(self.sock, server_hostname=None)
        return self.tls

    def mcs(self, cluster_flags=None, client_name="rawrdp"):
        s = self.tls
        s.sendall(x224_data(mcs_connect_initial(cluster_flags, client_name)))
        recv_tpkt(s)	# MCS Connect Response
        s.sendall(x224_data(b"\x04\x01\x00\x01\x00"))	# Erect Domain
        s.sendall(x224_data(b"\x28"))			# Attach User Request
        auc = recv_tpkt(s)[3:]
        if len(auc) < 4 or auc[0] >> 2 != 11 or auc[1] != 0:
            raise RdpError(f"no Attach User Confirm: {auc.hex()}")
        self.initiator = struct.unpack(">H", auc[2:4])[0] + MCS_BASE
        for channel in (self.initiator, IO_CHANNEL):
            s.sendall(x224_data(b"\x38" + struct.pack(">HH", self.initiator - MCS_BASE,
                                                      channel)))
            cjc = recv_tpkt(s)[3:]
            if not cjc or cjc[0] >> 2 != 15 or cjc[1] != 0:
                raise RdpError(f"channel {channel} not joined: {cjc.hex()}")

    def send_info(self, user, domain="", password=""):
        data = client_info(user, domain, password)
        self.tls.sendall(x224_data(b"\x64" + struct.pack(">HH", self.initiator - MCS_BASE,
                                                         IO_CHANNEL) + b"\x70" +
                                   per_len(len(data)) + data))

    def read_outcome(self):
        """Reads server PDUs until a redirection, or the close."""
        res = Result()
        while True:
            try:
                frame = recv_tpkt(self.tls)
            except (EOFError, ConnectionError, ssl.SSLError):
                res.closed = True
                return res
            payload = mcs_payload(frame)
            if payload is None:
                continue
            parse_pdu(payload, res)
            if res.redirected:
                return res


def mcs_payload(frame):
    """The user data of an MCS Send Data Indication, else None."""
    if len(frame) < 3 or frame[:3] != b"\x02\xf0\x80":
        return None
    m = frame[3:]
    if len(m) < 7 or m[0] >> 2 != 26:
        return None
    off = 6
    n = m[off]
    if n & 0x80:
        n = ((n & 0x7F) << 8) | m[off + 1]
        off += 2
    else:
        off += 1
    return m[off:off + n]


def parse_pdu(p, res):
    if len(p) < 6:
        return
    total, pdutype = struct.unpack("<HH", p[:4])
    if total != len(p):
        flags = total
        if flags & SEC_LICENSE_PKT:
            res.license = True
            return
        p = p[4:]	# a basic security header
        if len(p) < 6:
            return
        total, pdutype = struct.unpack("<HH", p[:4])
    kind = pdutype & 0xF
    if kind == PDUTYPE_SERVER_REDIR:
        parse_redirect(p[6:], res)
    elif kind == PDUTYPE_DATA and len(p) >= 22 and p[14] == PDUTYPE2_SET_ERROR_INFO:
        res.errinfo = struct.unpack("<I", p[18:22])[0]


def parse_redirect(p, res):
    if len(p) < 14:
        return
    _, flags, _, _, redir = struct.unpack("<HHHII", p[:14])
    if flags != SEC_REDIRECTION_PKT:
        return
    res.redirected = True
    off = 14
    if redir & LB_TARGET_NET_ADDRESS:
        n = struct.unpack("<I", p[off:off + 4])[0]
        res.address = p[off + 4:off + 4 + n].decode("utf-16-le").rstrip("\0")
        off += 4 + n
    if redir & LB_LOAD_BALANCE_INFO:
        n = struct.unpack("<I", p[off:off + 4])[0]
        res.token = p[off + 4:off + 4 + n].decode("latin-1").rstrip("\r\n")
        off += 4 + n


def redirect(host, port, user, domain="", timeout=10.0, cookie=None, source=None,
             client_name="rawrdp"):
    """One whole connection up to the broker's answer (client_name: as
    gcc_conference_create_request takes it)."""
    with Client(host, port, timeout, source) as c:
        c.x224(cookie if cookie is not None else user[:9])
        c.start_tls()
        c.mcs(client_name=client_name)
        c.send_info(user, domain)
        return c.read_outcome()
