#!/usr/bin/env python3
"""WinRM test peer for the Hyper-V adapter. NOT Windows, NOT Hyper-V.

A WS-Management endpoint at /wsman that:
- authenticates like WinRM: HTTP with NTLM (pyspnego's real NTLM acceptor, credentials from
  NTLM_USER_FILE, DOMAIN:USER:PASSWORD) and WinRM message encryption
  (multipart/encrypted, application/HTTP-SPNEGO-session-encrypted), or HTTPS (self-signed
  certificate made with openssl at start) with Basic;
- answers the unauthenticated Identify (WSMANIDENTIFY: unauthenticated);
- runs the remote-shell flow (Create, Command, Receive, Signal, Delete);
- "runs" powershell.exe -EncodedCommand by decoding the script and interpreting it with
  pwsh.py (a tokenizer, parser and evaluator for the subset of Windows PowerShell 5.1 a
  management script uses) against the Hyper-V cmdlets below and an in-memory host; a construct
  or cmdlet it does not implement is refused loudly (logged, and a ParserError to the caller),
  never guessed. VM state follows Hyper-V's cmdlet rules; output follows Windows PowerShell 5.1
  (ConvertTo-Json -Compress, VMState as a number, errors as CLIXML on stderr, warnings as CLIXML
  warning records, a progress record on every run, exit codes).

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

import pwsh

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


class VM(pwsh.PSObject):
    """A Microsoft.HyperV.PowerShell.VirtualMachine over the host's record (live: a state
    change shows through every reference, as with the real objects)."""

    type_name = "Microsoft.HyperV.PowerShell.VirtualMachine"

    def __init__(self, record):
        self.record = record

    def get(self, name):
        r = self.record
        key = name.lower()
        if key == "id":
            return pwsh.Guid(r["Id"])
        if key == "state":
            return pwsh.Enum("Microsoft.HyperV.PowerShell.VMState", r["State"], STATE_NAMES)
        for field in ("Name", "ProcessorCount", "MemoryStartup", "Generation"):
            if key == field.lower():
                return r[field]
        return super().get(name)

    def to_string(self):
        return f"VirtualMachine (Name = '{self.record['Name']}') [Id = '{self.record['Id']}']"


class VMHost(pwsh.PSObject):
    type_name = "Microsoft.HyperV.PowerShell.VMHost"

    def get(self, name):
        values = {"computername": "HV-TEST-PEER", "logicalprocessorcount": os.cpu_count() or 1,
                  "memorycapacity": 64 * 1024 ** 3}
        if name.lower() in values:
            return values[name.lower()]
        return super().get(name)


def error_view(cmd, message, category, target, exception, error_id):
    """PowerShell 5.1's default error view for an error of cmdlet `cmd`."""
    tok, line = cmd.token, cmd.source_line.strip()
    lines = [f"{cmd.name} : {message[0]}"] + message[1:]
    lines += [f"At line:{tok.line} char:{tok.col}", f"+ {line}", "+ " + "~" * min(len(line), 60),
              f"    + CategoryInfo          : {category}: ({target}) [{cmd.name}], {exception}",
              f"    + FullyQualifiedErrorId : {error_id}", " "]
    return lines


def wrong_state(cmd, vm):
    class_name = cmd.name.replace("-", "")
    return error_view(cmd, [f"'{vm['Name']}' failed to change state.",
                            "The operation cannot be performed while the object is in its current state."],
                      "InvalidOperation", ":", "VirtualizationException",
                      f"InvalidState,Microsoft.HyperV.PowerShell.Commands.{class_name}")


class HyperV:
    """The Hyper-V module's cmdlets the test peer knows, against the in-memory host. The
    interpreter runs with the host lock held; Stop-VM lets go of it while the guest shuts down."""

    def __init__(self, host, run):
        self.host = host
        self.run = run

    def cmdlets(self):
        vm_param = ("VM",)
        return {
            "get-vm": (self.get_vm, (), ("Name", "Id"), ("Name",)),
            "start-vm": (self.start_vm, (), vm_param, ()),
            "stop-vm": (self.stop_vm, ("Force", "TurnOff"), vm_param, ()),
            "suspend-vm": (self.suspend_vm, (), vm_param, ()),
            "resume-vm": (self.resume_vm, (), vm_param, ()),
            "save-vm": (self.save_vm, (), vm_param, ()),
            "restart-vm": (self.restart_vm, ("Force",), vm_param, ()),
            "remove-vm": (self.remove_vm, ("Force",), vm_param, ()),
            "new-vm": (self.new_vm, ("NoVHD",), ("Name", "Generation", "MemoryStartupBytes"), ("Name",)),
            "set-vmmemory": (self.set_memory, (), ("VM", "StartupBytes"), ()),
            "set-vmprocessor": (self.set_processor, (), ("VM", "Count"), ()),
            "get-vmhost": (self.get_vmhost, (), (), ()),
        }

    def one_vm(self, cmd):
        """-VM: exactly one VirtualMachine (PowerShell's parameter binding refuses $null)."""
        v = cmd.params.get("VM")
        if isinstance(v, list) and len(v) == 1:
            v = v[0]
        if v is None:
            raise pwsh.PsError(error_view(cmd, ["Cannot validate argument on parameter 'VM'. The argument is null or empty. "
                                                "Provide an argument that is not null or empty, and then try the command again."],
                                          "InvalidData", ":", "ParameterBindingValidationException",
                                          f"ParameterArgumentValidationError,Microsoft.HyperV.PowerShell.Commands.{cmd.name.replace('-', '')}"))
        if not isinstance(v, VM):
            raise pwsh.Unsupported(f"{cmd.name} -VM given a {pwsh.type_of(v)}")
        if v.record["Id"] not in self.host.vms:
            raise pwsh.PsError(error_view(cmd, ["The operation failed because the file was not found."], "ObjectNotFound", ":",
                                          "VirtualizationException",
                                          f"ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.{cmd.name.replace('-', '')}"))
        return v.record

    def no_input(self, cmd, objs):
        if objs:
            raise pwsh.Unsupported(f"pipeline input to {cmd.name}")

    def get_vm(self, cmd, objs):
        self.no_input(cmd, objs)
        vms = list(self.host.vms.values())
        if "Name" in cmd.params and "Id" in cmd.params:
            raise pwsh.Unsupported("Get-VM with both -Name and -Id")
        if "Name" in cmd.params:
            pattern = pwsh.as_string(cmd.params["Name"])
            rx = pwsh.wildcard_regex(pattern)
            found = [v for v in vms if rx.match(v["Name"])]
            if not found and not pwsh.has_wildcards(pattern):
                name = pwsh.unescape_wildcards(pattern)
                cmd.error(error_view(cmd, [f"Hyper-V was unable to find a virtual machine with name \"{name}\"."],
                                     "InvalidArgument", f"{name}:String", "VirtualizationException",
                                     "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"))
            return [VM(v) for v in found]
        if "Id" in cmd.params:
            raw = cmd.params["Id"]
            vid = raw.text if isinstance(raw, pwsh.Guid) else pwsh.as_string(raw).lower()
            if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", vid):
                raise pwsh.PsError(error_view(cmd, [f"Cannot bind parameter 'Id'. Cannot convert value \"{vid}\" to type \"System.Guid\"."],
                                              "InvalidArgument", ":", "ParameterBindingException",
                                              "CannotConvertArgumentNoMessage,Microsoft.HyperV.PowerShell.Commands.GetVM"))
            if vid not in self.host.vms:
                cmd.error(error_view(cmd, [f"Hyper-V was unable to find a virtual machine with id \"{vid}\"."],
                                     "InvalidArgument", f"{vid}:Guid", "VirtualizationException",
                                     "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"))
                return []
            return [VM(self.host.vms[vid])]
        return [VM(v) for v in vms]

    def start_vm(self, cmd, objs):
        self.no_input(cmd, objs)
        vm = self.one_vm(cmd)
        if vm["State"] == RUNNING:
            self.run.warnings.append("The virtual machine is already in the specified state.")
        elif vm["State"] in (OFF, SAVED):
            vm["State"] = RUNNING
        else:
            cmd.error(wrong_state(cmd, vm))
        return []

    def stop_vm(self, cmd, objs):
        self.no_input(cmd, objs)
        vm = self.one_vm(cmd)
        if not cmd.params.get("Force"):
            raise pwsh.Unsupported("Stop-VM without -Force (it would prompt)")
        s = vm["State"]
        if s == OFF:
            self.run.warnings.append("The virtual machine is already in the specified state.")
        elif cmd.params.get("TurnOff"):
            vm["State"] = OFF
        elif s in (RUNNING, STOPPING):
            vm["State"] = STOPPING
            # Stop-VM waits for the guest; the guest keeps going if the caller gives up.
            self.host.lock.release()
            try:
                time.sleep(self.host.shutdown_delay(vm))
            finally:
                self.host.lock.acquire()
            if vm["State"] == STOPPING:
                vm["State"] = OFF
        else:
            cmd.error(wrong_state(cmd, vm))
        return []

    def suspend_vm(self, cmd, objs):
        self.no_input(cmd, objs)
        vm = self.one_vm(cmd)
        if vm["State"] != RUNNING:
            cmd.error(wrong_state(cmd, vm))
        else:
            vm["State"] = PAUSED
        return []

    def resume_vm(self, cmd, objs):
        self.no_input(cmd, objs)
        vm = self.one_vm(cmd)
        if vm["State"] != PAUSED:
            cmd.error(wrong_state(cmd, vm))
        else:
            vm["State"] = RUNNING
        return []

    def save_vm(self, cmd, objs):
        self.no_input(cmd, objs)
        vm = self.one_vm(cmd)
        if vm["State"] not in (RUNNING, PAUSED):
            cmd.error(wrong_state(cmd, vm))
        else:
            vm["State"] = SAVED
        return []

    def restart_vm(self, cmd, objs):
        self.no_input(cmd, objs)
        vm = self.one_vm(cmd)
        if not cmd.params.get("Force"):
            raise pwsh.Unsupported("Restart-VM without -Force (it would prompt)")
        if vm["State"] != RUNNING:
            cmd.error(wrong_state(cmd, vm))
        return []

    def remove_vm(self, cmd, objs):
        self.no_input(cmd, objs)
        vm = self.one_vm(cmd)
        if not cmd.params.get("Force"):
            raise pwsh.Unsupported("Remove-VM without -Force (it would prompt)")
        # Hyper-V turns a running VM off and deletes it; the adapter's script guards that.
        del self.host.vms[vm["Id"]]
        return []

    def new_vm(self, cmd, objs):
        self.no_input(cmd, objs)
        if not cmd.params.get("NoVHD"):
            raise pwsh.Unsupported("New-VM without -NoVHD (the peer has no disks)")
        name = pwsh.as_string(cmd.params.get("Name"))
        generation = pwsh.as_int(cmd.params.get("Generation", 1))
        memory = pwsh.as_int(cmd.params.get("MemoryStartupBytes", 512 * 1024 ** 2))
        if generation not in (1, 2):
            cmd.error(error_view(cmd, ["Cannot validate argument on parameter 'Generation'. The argument \"%d\" does not belong to the set \"1,2\"." % generation],
                                 "InvalidData", ":", "ParameterBindingValidationException",
                                 "ParameterArgumentValidationError,Microsoft.HyperV.PowerShell.Commands.NewVM"))
            return []
        if memory % (2 * 1024 ** 2):
            cmd.error(error_view(cmd, ["Failed to create a new virtual machine.", "The memory size must be a multiple of 2 MB."],
                                 "InvalidArgument", ":", "VirtualizationException",
                                 "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM"))
            return []
        return [VM(self.host.add(name, OFF, 1, memory, generation))]

    def set_memory(self, cmd, objs):
        self.no_input(cmd, objs)
        vm = self.one_vm(cmd)
        if vm["State"] != OFF:
            cmd.error(wrong_state(cmd, vm))
            return []
        vm["MemoryStartup"] = pwsh.as_int(cmd.params.get("StartupBytes"))
        return []

    def set_processor(self, cmd, objs):
        self.no_input(cmd, objs)
        vm = self.one_vm(cmd)
        if vm["State"] != OFF:
            cmd.error(wrong_state(cmd, vm))
            return []
        vm["ProcessorCount"] = pwsh.as_int(cmd.params.get("Count"))
        return []

    def get_vmhost(self, cmd, objs):
        self.no_input(cmd, objs)
        return [VMHost()]


class Run:
    """One powershell.exe run: the script interpreted (pwsh.py) against the host model."""

    def __init__(self, host, script):
        self.host = host
        self.script = script
        self.stdout = ""
        self.warnings = []
        self.error = None
        self.exit_code = 0

    def execute(self):
        interp = pwsh.Interpreter(HyperV(self.host, self).cmdlets())
        try:
            with self.host.lock:
                self.exit_code = interp.run(self.script)
        except pwsh.PsError as e:
            self.error = e.lines
            self.exit_code = 1
        except pwsh.Unsupported as e:
            # Loud: the peer's log says what it could not read, and the caller gets a parse error.
            log(f"REFUSED SCRIPT ({e}):\n{self.script}")
            self.error = [f"The test peer cannot interpret this script: {e}.",
                          "    + CategoryInfo          : ParserError: (:) [], ParentContainsErrorRecordException",
                          "    + FullyQualifiedErrorId : TestPeerUnsupported", " "]
            self.exit_code = 1
            return
        if interp.errors and self.error is None:
            self.error = interp.errors
        lines = []
        for o in interp.output:
            if not isinstance(o, str):
                # PowerShell would format it as a table; the adapter always asks for JSON.
                log(f"REFUSED SCRIPT (writes a {pwsh.type_of(o)} to the output):\n{self.script}")
                self.error = [f"The test peer cannot format a {pwsh.type_of(o)} for output.",
                              "    + CategoryInfo          : ParserError: (:) [], ParentContainsErrorRecordException",
                              "    + FullyQualifiedErrorId : TestPeerUnsupported", " "]
                self.exit_code = 1
                return
            lines.append(o)
        self.stdout = "\r\n".join(lines)

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
