#!/usr/bin/env python3
"""WinRM test peer for the Hyper-V adapter. NOT Windows, NOT Hyper-V.

A WS-Management endpoint at /wsman that:
- authenticates like WinRM: HTTP with NTLM (pyspnego's real NTLM acceptor, credentials from
  NTLM_USER_FILE, DOMAIN:USER:PASSWORD) and WinRM message encryption
  (multipart/encrypted, application/HTTP-SPNEGO-session-encrypted), or HTTPS (self-signed
  certificate made with openssl at start) with Basic;
- answers the unauthenticated Identify (WSMANIDENTIFY: unauthenticated);
- runs the remote-shell flow (Create, Command, Receive, Signal, Delete);
- "runs" powershell.exe -EncodedCommand by decoding the script and recognising exactly the
  script shapes the adapter sends (remote-drivers/src/hyperv/powershell.rs); anything else gets
  a PowerShell-style parse error. VM state follows Hyper-V's cmdlet rules; output follows
  Windows PowerShell 5.1 (ConvertTo-Json -Compress, VMState as a number, errors as CLIXML on
  stderr, warnings as CLIXML warning records, a progress record on every run, exit codes).

Prints "READY <port>" on stdout once listening. Logs go to stderr. SIGUSR1 makes it forget every
NTLM security context (as a WinRM service restart would): the next request on an old connection
gets 401.
"""

import argparse
import base64
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape as xml_escape

import spnego

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ACTIONS = {
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create": "Create",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete": "Delete",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command": "Command",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive": "Receive",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal": "Signal",
    # WS-Enumeration over the shell resource lists the open shells (what
    # `Get-WSManInstance -ResourceURI shell -Enumerate` shows); tests count leaked shells.
    "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate": "Enumerate",
}
ENC_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = b"Encrypted Boundary"
MAX_BODY = 1 << 20
PRODUCT_VERSION = "OS: 10.0.20348 SP: 0.0 Stack: 3.0"

# Microsoft.HyperV.PowerShell.VMState values (Windows PowerShell 5.1 prints the number).
RUNNING, OFF, STOPPING, SAVED, PAUSED = 2, 3, 4, 6, 9
STATE_NAMES = {RUNNING: "Running", OFF: "Off", STOPPING: "Stopping", SAVED: "Saved", PAUSED: "Paused"}


def log(*args):
    print("winrm-peer:", *args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the Hyper-V model

class Host:
    def __init__(self, vm_count, fixtures):
        self.lock = threading.Lock()
        self.vms = {}  # id -> dict
        for i in range(vm_count):
            self.add(f"vm-{i:03d}", RUNNING if i % 4 == 1 else OFF, 2, 2 * 1024 ** 3, 2)
        if fixtures:
            # Two VMs sharing a name (Hyper-V allows it) and a guest slow to shut down.
            self.add("dup", OFF, 1, 512 * 1024 ** 2, 1)
            self.add("dup", OFF, 1, 512 * 1024 ** 2, 1)
            self.add("slow-shutdown", RUNNING, 1, 512 * 1024 ** 2, 2)

    def add(self, name, state, cpus, memory, generation):
        vid = str(uuid.uuid4())
        self.vms[vid] = {
            "Name": name, "Id": vid, "State": state, "ProcessorCount": cpus,
            "MemoryStartup": memory, "Generation": generation,
        }
        return self.vms[vid]

    def shutdown_delay(self, vm):
        return 4.0 if vm["Name"].startswith("slow-") else 0.2


FIELDS = "Select-Object Name, @{n='Id';e={$_.Id.ToString()}}, State, ProcessorCount, MemoryStartup, Generation"
PROLOGUE = "$ErrorActionPreference = 'Stop'\n$ProgressPreference = 'SilentlyContinue'\n"
Q = "'\u2018\u2019\u201a\u201b"
QUOTED = "'((?:[^" + Q + "]|[" + Q + "]{2})*)'"


def emit(expr):
    return f"ConvertTo-Json -Compress -Depth 2 -InputObject @({expr} | {FIELDS})"


def unquote(s):
    return re.sub("([" + Q + "])\\1", "\\1", s)


SELECT_NAME = re.compile(r"^\$vm = @\(Get-VM -Name \(\[WildcardPattern\]::Escape\(" + QUOTED + r"\)\)\)$")
SELECT_ID = re.compile(r"^\$vm = @\(Get-VM -Id " + QUOTED + r"\)$")
GUARD = "if ($vm.Count -ne 1) { " + emit("$vm") + "; exit 3 }"
AFTER = emit("(Get-VM -Id $vm[0].Id)")
ACTION_LINES = {
    "Start-VM -VM $vm[0]": "start",
    "Stop-VM -VM $vm[0] -Force": "shutdown",
    "Stop-VM -VM $vm[0] -TurnOff -Force": "turnoff",
    "Suspend-VM -VM $vm[0]": "suspend",
    "if ($vm[0].State -eq 'Saved') { Start-VM -VM $vm[0] } else { Resume-VM -VM $vm[0] }": "resume",
    "Save-VM -VM $vm[0]": "save",
    "Restart-VM -VM $vm[0] -Force": "reboot",
}
REMOVE_GUARD = ("if ($vm[0].State -ne 'Off') { Write-Error -Message (\"Cannot remove '\" + $vm[0].Name + "
                "\"' while it is \" + $vm[0].State + '; turn it off first.') -Category InvalidOperation -ErrorId InvalidState }")
REMOVE_LINE = "Remove-VM -VM $vm[0] -Force"
DEFINE = [
    re.compile(r"^\$vm = @\(Get-VM -Name \(\[WildcardPattern\]::Escape\(" + QUOTED + r"\)\) -ErrorAction SilentlyContinue\)$"),
    re.compile(r"^if \(\$vm\.Count -gt 1\) \{ (.*); exit 3 \}$"),
    re.compile(r"^if \(\$vm\.Count -eq 0\) \{ \$vm = @\(New-VM -Name " + QUOTED + r" -Generation (\d) -MemoryStartupBytes (\d+) -NoVHD\) \}$"),
    re.compile(r"^elseif \(\$vm\[0\]\.Generation -ne (\d)\) \{ Write-Error -Message \(" + QUOTED +
               r" \+ ' is a generation ' \+ \$vm\[0\]\.Generation \+ ' virtual machine; its generation cannot change\.'\) -Category InvalidArgument -ErrorId GenerationMismatch \}$"),
    re.compile(r"^Set-VMMemory -VM \$vm\[0\] -StartupBytes (\d+)$"),
    re.compile(r"^Set-VMProcessor -VM \$vm\[0\] -Count (\d+)$"),
]
HOST_INFO = [
    "$h = Get-VMHost",
    "ConvertTo-Json -Compress -InputObject @{ ComputerName = $h.ComputerName; LogicalProcessorCount = $h.LogicalProcessorCount; "
    "MemoryCapacity = $h.MemoryCapacity; OsVersion = [Environment]::OSVersion.Version.ToString(); PSVersion = $PSVersionTable.PSVersion.ToString() }",
]


class PsFailure(Exception):
    """A terminating PowerShell error: the default error view's lines."""

    def __init__(self, lines):
        super().__init__(lines[0] if lines else "")
        self.lines = lines


def error_view(cmdlet, message, category, target, exception, error_id, line_no, line):
    lines = [f"{cmdlet} : {message[0]}"] + message[1:]
    lines += [f"At line:{line_no} char:1", f"+ {line}", "+ " + "~" * min(len(line), 60),
              f"    + CategoryInfo          : {category}: ({target}) [{cmdlet}], {exception}",
              f"    + FullyQualifiedErrorId : {error_id}", " "]
    return PsFailure(lines)


def wrong_state(cmdlet, vm, line_no, line):
    class_name = cmdlet.replace("-", "")
    return error_view(cmdlet, [f"'{vm['Name']}' failed to change state.",
                               "The operation cannot be performed while the object is in its current state."],
                      "InvalidOperation", ":", "VirtualizationException",
                      f"InvalidState,Microsoft.HyperV.PowerShell.Commands.{class_name}", line_no, line)


def ps_json(records):
    return json.dumps(records, separators=(",", ":"))


class Run:
    """One powershell.exe run."""

    def __init__(self, host, script):
        self.host = host
        self.script = script
        self.stdout = ""
        self.warnings = []
        self.error = None
        self.exit_code = 0

    def execute(self):
        try:
            self.exit_code = self.dispatch()
        except PsFailure as f:
            self.error = f.lines
            self.exit_code = 1

    def parse_error(self, what):
        return PsFailure([f"The test peer does not recognise this script ({what}); it emulates only the adapter's own script shapes.",
                          "    + CategoryInfo          : ParserError: (:) [], ParentContainsErrorRecordException",
                          "    + FullyQualifiedErrorId : UnexpectedToken", " "])

    def dispatch(self):
        if not self.script.startswith(PROLOGUE):
            raise self.parse_error("no prologue")
        lines = self.script[len(PROLOGUE):].split("\n")
        if lines == [emit("Get-VM")]:
            with self.host.lock:
                self.stdout = ps_json([dict(v) for v in self.host.vms.values()])
            return 0
        if lines == HOST_INFO:
            self.stdout = json.dumps({"ComputerName": "HV-TEST-PEER", "LogicalProcessorCount": os.cpu_count() or 1,
                                      "MemoryCapacity": 64 * 1024 ** 3, "OsVersion": "10.0.20348.0",
                                      "PSVersion": "5.1.20348.2652"}, separators=(",", ":"))
            return 0
        if len(lines) == 7 and DEFINE[0].match(lines[0]):
            return self.define(lines)
        with self.host.lock:
            vms = self.select(lines[0] if lines else "")
            if lines[1:] == [emit("$vm")]:
                self.stdout = ps_json([dict(v) for v in vms])
                return 0
            if len(lines) < 3 or lines[1] != GUARD:
                raise self.parse_error("unknown shape")
            if len(vms) != 1:
                self.stdout = ps_json([dict(v) for v in vms])
                return 3
            vm = vms[0]
            if lines[2:] == [REMOVE_GUARD, REMOVE_LINE, "ConvertTo-Json -Compress -InputObject @()"]:
                if vm["State"] != OFF:
                    state = STATE_NAMES.get(vm["State"], str(vm["State"]))
                    raise PsFailure([f"Cannot remove '{vm['Name']}' while it is {state}; turn it off first.",
                                     "At line:5 char:32", "    + CategoryInfo          : InvalidOperation: (:) [Write-Error], WriteErrorException",
                                     "    + FullyQualifiedErrorId : InvalidState", " "])
                del self.host.vms[vm["Id"]]
                self.stdout = "[]"
                return 0
            if len(lines) != 4 or lines[3] != AFTER or lines[2] not in ACTION_LINES:
                raise self.parse_error("unknown action")
            action = ACTION_LINES[lines[2]]
            delay = self.act(vm, action, lines[2])
        if delay:
            # Stop-VM waits for the guest; the guest keeps going if the caller gives up.
            time.sleep(delay)
            with self.host.lock:
                if vm["State"] == STOPPING:
                    vm["State"] = OFF
        with self.host.lock:
            self.stdout = ps_json([dict(vm)])
        return 0

    def select(self, line):
        m = SELECT_NAME.match(line)
        if m:
            name = unquote(m.group(1))
            vms = [v for v in self.host.vms.values() if v["Name"].lower() == name.lower()]
            if not vms:
                raise error_view("Get-VM", [f"Hyper-V was unable to find a virtual machine with name \"{name}\"."],
                                 "InvalidArgument", f"{name}:String", "VirtualizationException",
                                 "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM", 3, line)
            return vms
        m = SELECT_ID.match(line)
        if m:
            vid = unquote(m.group(1)).lower()
            if vid not in self.host.vms:
                raise error_view("Get-VM", [f"Hyper-V was unable to find a virtual machine with id \"{vid}\"."],
                                 "InvalidArgument", f"{vid}:Guid", "VirtualizationException",
                                 "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM", 3, line)
            return [self.host.vms[vid]]
        raise self.parse_error("unknown VM selection")

    def act(self, vm, action, line):
        """Applies `action` under the host lock; returns how long to wait unlocked."""
        s = vm["State"]
        if action == "start":
            if s == RUNNING:
                self.warnings.append("The virtual machine is already in the specified state.")
            elif s in (OFF, SAVED):
                vm["State"] = RUNNING
            else:
                raise wrong_state("Start-VM", vm, 4, line)
        elif action == "shutdown":
            if s == OFF:
                self.warnings.append("The virtual machine is already in the specified state.")
            elif s in (RUNNING, STOPPING):
                vm["State"] = STOPPING
                return self.host.shutdown_delay(vm)
            else:
                raise wrong_state("Stop-VM", vm, 4, line)
        elif action == "turnoff":
            if s == OFF:
                self.warnings.append("The virtual machine is already in the specified state.")
            else:
                vm["State"] = OFF
        elif action == "suspend":
            if s != RUNNING:
                raise wrong_state("Suspend-VM", vm, 4, line)
            vm["State"] = PAUSED
        elif action == "resume":
            if s == SAVED:
                vm["State"] = RUNNING
            elif s == PAUSED:
                vm["State"] = RUNNING
            else:
                raise wrong_state("Resume-VM", vm, 4, line)
        elif action == "save":
            if s not in (RUNNING, PAUSED):
                raise wrong_state("Save-VM", vm, 4, line)
            vm["State"] = SAVED
        elif action == "reboot":
            if s != RUNNING:
                raise wrong_state("Restart-VM", vm, 4, line)
        return 0

    def define(self, lines):
        m = [rx.match(line) for rx, line in zip(DEFINE, lines[:6])]
        if not all(m) or lines[6] != AFTER or m[1].group(1) != emit("$vm"):
            raise self.parse_error("unknown define shape")
        name = unquote(m[0].group(1))
        if unquote(m[2].group(1)) != name or unquote(m[3].group(2)) != name:
            raise self.parse_error("define names differ")
        generation, memory = int(m[2].group(2)), int(m[2].group(3))
        if int(m[3].group(1)) != generation or int(m[4].group(1)) != memory:
            raise self.parse_error("define values differ")
        cpus = int(m[5].group(1))
        with self.host.lock:
            vms = [v for v in self.host.vms.values() if v["Name"].lower() == name.lower()]
            if len(vms) > 1:
                self.stdout = ps_json([dict(v) for v in vms])
                return 3
            if not vms:
                if memory % (2 * 1024 ** 2):
                    raise error_view("New-VM", ["Failed to create a new virtual machine.", "The memory size must be a multiple of 2 MB."],
                                     "InvalidArgument", ":", "VirtualizationException",
                                     "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM", 5, lines[2])
                vm = self.host.add(name, OFF, 1, memory, generation)
            else:
                vm = vms[0]
                if vm["Generation"] != generation:
                    raise PsFailure([f"{name} is a generation {vm['Generation']} virtual machine; its generation cannot change.",
                                     "    + CategoryInfo          : InvalidArgument: (:) [Write-Error], WriteErrorException",
                                     "    + FullyQualifiedErrorId : GenerationMismatch", " "])
            if vm["State"] != OFF:
                raise wrong_state("Set-VMMemory", vm, 7, lines[4])
            vm["MemoryStartup"] = memory
            vm["ProcessorCount"] = cpus
            self.stdout = ps_json([dict(vm)])
        return 0

    def clixml(self):
        """stderr as PowerShell writes it over WinRM: CLIXML with a progress record."""
        def enc(s):
            return xml_escape(s.replace("_x", "_x005F_x")) + "_x000D__x000A_"
        out = ['#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">',
               '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>'
               '<MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil />'
               '<PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>']
        for w in self.warnings:
            out.append(f'<S S="warning">{enc(w)}</S>')
        for line in self.error or []:
            out.append(f'<S S="Error">{enc(line)}</S>')
        out.append("</Objs>")
        return "".join(out).encode("utf-8")


# ---------------------------------------------------------------- WS-Man

class Shells:
    def __init__(self):
        self.lock = threading.Lock()
        self.shells = {}  # shell id -> {command id -> (thread, Run, done Event)}


def soap(action, body, relates_to=""):
    return (f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}">'
            f'<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>'
            f'<a:RelatesTo>{xml_escape(relates_to)}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>').encode()


def fault(subcode, reason, code):
    body = (f'<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:{subcode}</s:Value></s:Subcode></s:Code>'
            f'<s:Reason><s:Text xml:lang="en-US">{xml_escape(reason)}</s:Text></s:Reason><s:Detail>'
            f'<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="{code}" Machine="hv-test-peer">'
            f'<f:Message>{xml_escape(reason)}</f:Message></f:WSManFault></s:Detail></s:Fault>')
    return 500, soap("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", body)


def handle_wsman(server, xml_bytes):
    try:
        env = ET.fromstring(xml_bytes)
    except ET.ParseError as e:
        return fault("SchemaValidationError", f"The SOAP XML in the message does not match the schema: {e}", 2150858817)
    header = env.find("s:Header", NS)
    body = env.find("s:Body", NS)
    if header is None or body is None:
        return fault("SchemaValidationError", "No SOAP header or body.", 2150858817)
    action_uri = (header.findtext("a:Action", "", NS) or "").strip()
    message_id = (header.findtext("a:MessageID", "", NS) or "").strip()
    resource = (header.findtext("w:ResourceURI", "", NS) or "").strip()
    action = ACTIONS.get(action_uri)
    if action is None:
        return fault("ActionNotSupported", f"The action {action_uri} is not supported by the service.", 2150858757)
    shells = server.shells
    if action == "Enumerate" and resource in (SHELL_URI, SHELL_URI.rsplit("/", 1)[0]):
        with shells.lock:
            items = "".join(f"<rsp:Shell><rsp:ShellId>{sid}</rsp:ShellId><rsp:ResourceUri>{SHELL_URI}</rsp:ResourceUri></rsp:Shell>"
                            for sid in shells.shells)
        return 200, soap(action_uri + "Response",
                         f'<n:EnumerateResponse xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration"><n:EnumerationContext/>'
                         f'<w:Items>{items}</w:Items><w:EndOfSequence/></n:EnumerateResponse>', message_id)
    if resource != SHELL_URI:
        return fault("DestinationUnreachable", "The WS-Management service cannot process the request because the resource URI is invalid.", 2150858770)
    timeout = 60.0
    m = re.match(r"^PT(\d+(?:\.\d+)?)S$", (header.findtext("w:OperationTimeout", "", NS) or "").strip())
    if m:
        timeout = float(m.group(1))
    shell_id = None
    for sel in header.findall("w:SelectorSet/w:Selector", NS):
        if sel.get("Name") == "ShellId":
            shell_id = (sel.text or "").strip()
    shells = server.shells
    rsp = NS["rsp"]
    if action == "Create":
        sid = str(uuid.uuid4()).upper()
        with shells.lock:
            shells.shells[sid] = {}
        return 200, soap(action_uri + "Response",
                         f'<x:ResourceCreated xmlns:x="{NS["w"]}"><a:Address>{server.endpoint}</a:Address><a:ReferenceParameters>'
                         f'<w:ResourceURI>{SHELL_URI}</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">{sid}</w:Selector>'
                         f'</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>'
                         f'<rsp:Shell><rsp:ShellId>{sid}</rsp:ShellId><rsp:ResourceUri>{SHELL_URI}</rsp:ResourceUri></rsp:Shell>',
                         message_id)
    with shells.lock:
        commands = shells.shells.get(shell_id)
    if commands is None:
        return fault("InvalidSelectors", "The WS-Management service cannot process the request because the request contained invalid selectors for the resource.", 2150858843)
    if action == "Delete":
        with shells.lock:
            shells.shells.pop(shell_id, None)
        return 200, soap(action_uri + "Response", "", message_id)
    if action == "Command":
        line = body.find("rsp:CommandLine", NS)
        command = (line.findtext("rsp:Command", "", NS) if line is not None else "").strip()
        args = (line.findtext("rsp:Arguments", "", NS) if line is not None else "").strip()
        m = re.match(r"^-NoProfile -NonInteractive -EncodedCommand ([A-Za-z0-9+/=]+)$", args)
        run = Run(server.host, "")
        if command.lower() != "powershell.exe" or not m:
            run.error = [f"'{command} {args[:80]}' is not something this test peer runs.", " "]
            run.exit_code = 1
            done = threading.Event()
            done.set()
        else:
            try:
                run.script = base64.b64decode(m.group(1)).decode("utf-16-le")
            except Exception as e:  # noqa: BLE001 - any decoding failure is the caller's error
                run.script = f"<undecodable: {e}>"
            done = threading.Event()

            def work(run=run, done=done):
                run.execute()
                done.set()
            threading.Thread(target=work, daemon=True).start()
        cid = str(uuid.uuid4()).upper()
        with shells.lock:
            commands[cid] = (run, done)
        return 200, soap(action_uri + "Response", f"<rsp:CommandResponse><rsp:CommandId>{cid}</rsp:CommandId></rsp:CommandResponse>", message_id)
    if action == "Receive":
        desired = body.find("rsp:Receive/rsp:DesiredStream", NS)
        cid = desired.get("CommandId") if desired is not None else None
        entry = commands.get(cid)
        if entry is None:
            return fault("InvalidParameter", "The command id is not valid for this shell.", 2150858843)
        run, done = entry
        if not done.wait(timeout):
            return fault("TimedOut", "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.", 2150858793)
        out = base64.b64encode((run.stdout + "\r\n").encode("utf-8") if run.stdout else b"").decode()
        err = base64.b64encode(run.clixml()).decode()
        body_xml = (f'<rsp:ReceiveResponse><rsp:Stream Name="stdout" CommandId="{cid}">{out}</rsp:Stream>'
                    f'<rsp:Stream Name="stderr" CommandId="{cid}">{err}</rsp:Stream>'
                    f'<rsp:Stream Name="stdout" CommandId="{cid}" End="true"></rsp:Stream>'
                    f'<rsp:Stream Name="stderr" CommandId="{cid}" End="true"></rsp:Stream>'
                    f'<rsp:CommandState CommandId="{cid}" State="{rsp}/CommandState/Done"><rsp:ExitCode>{run.exit_code}</rsp:ExitCode>'
                    f'</rsp:CommandState></rsp:ReceiveResponse>')
        return 200, soap(action_uri + "Response", body_xml, message_id)
    if action == "Signal":
        sig = body.find("rsp:Signal", NS)
        cid = sig.get("CommandId") if sig is not None else None
        with shells.lock:
            commands.pop(cid, None)
        return 200, soap(action_uri + "Response", "<rsp:SignalResponse/>", message_id)
    return fault("ActionNotSupported", "unsupported", 2150858757)


IDENTIFY_RESPONSE = (
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsmid="http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd">'
    '<s:Header/><s:Body><wsmid:IdentifyResponse><wsmid:ProtocolVersion>http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd</wsmid:ProtocolVersion>'
    f'<wsmid:ProductVendor>Microsoft Corporation</wsmid:ProductVendor><wsmid:ProductVersion>{PRODUCT_VERSION}</wsmid:ProductVersion>'
    '</wsmid:IdentifyResponse></s:Body></s:Envelope>').encode()


# ---------------------------------------------------------------- message encryption

def unwrap_encrypted(ctx, body):
    """The sealed envelope inside a multipart/encrypted body (MS-WSMV 2.2.9.1)."""
    m = re.search(rb"OriginalContent: type=application/soap\+xml;charset=UTF-8;Length=(\d+)\r\n", body)
    marker = b"\tContent-Type: application/octet-stream\r\n"
    at = body.find(marker)
    if not m or at < 0:
        raise ValueError("not a WinRM encrypted body")
    length = int(m.group(1))
    data = body[at + len(marker):]
    sig_len = struct.unpack("<I", data[:4])[0]
    sig = data[4:4 + sig_len]
    sealed = data[4 + sig_len:4 + sig_len + length]
    if len(sealed) != length or not body.endswith(b"--" + BOUNDARY + b"--\r\n"):
        raise ValueError("truncated WinRM encrypted body")
    return ctx.unwrap_winrm(sig, sealed)


def wrap_encrypted(ctx, plain):
    res = ctx.wrap_winrm(plain)
    out = (b"--" + BOUNDARY + b"\r\n\tContent-Type: " + ENC_PROTOCOL.encode() + b"\r\n"
           b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(plain)).encode() + b"\r\n"
           b"--" + BOUNDARY + b"\r\n\tContent-Type: application/octet-stream\r\n")
    return out + struct.pack("<I", len(res.header)) + res.header + res.data + b"--" + BOUNDARY + b"--\r\n"


# ---------------------------------------------------------------- HTTP

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def setup(self):
        super().setup()
        # Headers and body go out as separate writes; without this, Nagle plus the client's
        # delayed ACK adds ~40 ms to every exchange (HTTP.sys has no such stall).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ntlm = None  # the connection's NTLM context (NTLM authenticates a connection)

    def log_message(self, fmt, *args):
        if os.environ.get("WINRM_PEER_VERBOSE"):
            log(fmt % args)

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def unauthorized(self):
        challenges = [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "Kerberos")]
        if self.server.mode == "https":
            challenges.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        self.reply(401, b"", challenges)

    def do_GET(self):
        self.reply(405 if self.path.lower().startswith("/wsman") else 404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.reply(413)
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if self.path.split("?")[0].lower() != "/wsman":
            self.reply(404)
            return
        if self.headers.get("WSMANIDENTIFY", "").lower() == "unauthenticated" and b"Identify" in body:
            self.reply(200, IDENTIFY_RESPONSE, [("Content-Type", "application/soap+xml;charset=UTF-8")])
            return
        if self.server.mode == "https":
            self.post_basic(body)
        else:
            self.post_ntlm(body)

    def post_basic(self, body):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            self.unauthorized()
            return
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except Exception:  # noqa: BLE001
            self.unauthorized()
            return
        if (user.lower(), password) not in self.server.basic_users:
            log(f"Basic logon failed for {user}")
            self.unauthorized()
            return
        status, answer = handle_wsman(self.server, body)
        self.reply(status, answer, [("Content-Type", "application/soap+xml;charset=UTF-8")])

    def post_ntlm(self, body):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Negotiate "):
            token = base64.b64decode(auth[len("Negotiate "):])
            if token[8:12] == b"\x01\x00\x00\x00":
                self.ntlm = spnego.server(protocol="ntlm")
                self.context = self.server.new_context()
                out = self.ntlm.step(token)
                self.server.record("negotiate", self.context, "401")
                self.reply(401, b"", [("WWW-Authenticate", "Negotiate " + base64.b64encode(out).decode())])
                return
            if self.ntlm is None:
                self.server.record("authenticate", None, "401")
                self.unauthorized()
                return
            try:
                self.ntlm.step(token)
            except Exception as e:  # noqa: BLE001 - any failed logon is a 401
                log(f"NTLM logon failed: {e}")
                self.ntlm = None
                self.server.record("authenticate", self.context, "401")
                self.unauthorized()
                return
            self.generation = self.server.generation
            self.server.logons += 1
            self.server.record("authenticate", self.context, "success")
        if self.ntlm is not None and getattr(self, "generation", None) != self.server.generation:
            # SIGUSR1 made the service forget its security contexts (as a restart would).
            self.ntlm = None
        if self.ntlm is None or not self.ntlm.complete:
            self.server.record("message", getattr(self, "context", None), "401")
            self.unauthorized()
            return
        self.server.record("message", self.context, "success")
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/encrypted") or ENC_PROTOCOL not in ctype:
            # AllowUnencrypted=false, Windows' default.
            self.reply(400 if body else 200)
            return
        try:
            plain = unwrap_encrypted(self.ntlm, body)
        except Exception as e:  # noqa: BLE001
            log(f"cannot decrypt: {e}")
            self.reply(400)
            self.close_connection = True
            return
        status, answer = handle_wsman(self.server, plain)
        wrapped = wrap_encrypted(self.ntlm, answer)
        self.reply(status, wrapped, [(
            "Content-Type", f'multipart/encrypted;protocol="{ENC_PROTOCOL}";boundary="{BOUNDARY.decode()}"')])


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    # The NTLM log (<dir>/ntlm.jsonl, one JSON object a line) lets tests see what the
    # service saw: each request's phase ("negotiate", "authenticate", "message"), the
    # security context it used (numbered from 1 as they are made) and whether it was
    # accepted ("success") or answered 401; {"event": "forgotten"} when SIGUSR1 ends them.
    def open_log(self, path):
        self.ntlm_log = open(path, "a", encoding="utf-8")
        self.log_lock = threading.Lock()
        self.contexts = 0

    def new_context(self):
        with self.log_lock:
            self.contexts += 1
            return self.contexts

    def record(self, phase, context, outcome):
        self.write_log({"phase": phase, "context": context, "outcome": outcome})

    def write_log(self, entry):
        with self.log_lock:
            self.ntlm_log.write(json.dumps(entry) + "\n")
            self.ntlm_log.flush()


def make_cert(directory):
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    # A leaf, not a CA: clients trusting this file as a root must still accept it
                    # as the server's certificate (webpki refuses a CA certificate used as one).
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["ntlm", "https"], default="ntlm")
    p.add_argument("--vms", type=int, default=4)
    p.add_argument("--fixtures", action="store_true")
    p.add_argument("--dir", required=True)
    args = p.parse_args()
    users = []
    with open(os.environ["NTLM_USER_FILE"]) as f:
        for line in f.read().splitlines():
            parts = line.split(":")
            if len(parts) == 3:
                domain, user, password = parts
                users.append(((f"{domain}\\{user}" if domain else user).lower(), password))
    server = Server(("127.0.0.1", 0), Handler)
    server.mode = args.mode
    server.basic_users = users
    server.host = Host(args.vms, args.fixtures)
    server.shells = Shells()
    port = server.server_address[1]
    scheme = "https" if args.mode == "https" else "http"
    server.endpoint = f"{scheme}://127.0.0.1:{port}/wsman"
    if args.mode == "https":
        cert, key = make_cert(args.dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.generation = 0
    server.logons = 0

    server.open_log(os.path.join(args.dir, "ntlm.jsonl"))

    def forget_contexts(signum, frame):
        server.generation += 1
        log(f"forgetting NTLM contexts after {server.logons} logons")
        # On a thread: the handler runs in the serving thread between bytecodes, maybe while
        # it holds the log lock.
        threading.Thread(target=server.write_log, args=({"event": "forgotten"},)).start()
    signal.signal(signal.SIGUSR1, forget_contexts)
    print(f"READY {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
