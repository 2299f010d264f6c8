using System.Text;

namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// Console.Out and Console.Error of a worker process. What a task writes (per async flow, so it follows the task across
/// awaits) is handed, a whole line at a time, to that task's sink, which streams it to the task's submitter while the
/// task runs; anything written outside a task goes to the worker's log.
/// </summary>
internal sealed class TaskOutputCapture(TextWriter log, bool isError) : TextWriter
{
    /// <summary>Receives whole lines (without the final newline) and whether they came from Console.Error.</summary>
    public delegate void Sink(string text, bool isError);

    private sealed class Capture(Sink sink, Rpc.Transport.FramedConnection? caller)
    {
        public Sink Sink { get; } = sink;
        public Rpc.Transport.FramedConnection? Caller { get; } = caller;
        public StringBuilder Out { get; } = new();
        public StringBuilder Error { get; } = new();
    }

    private static readonly AsyncLocal<Capture?> s_current = new();

    public override Encoding Encoding => log.Encoding;

    /// <summary>Routes Console.Out and Console.Error through capture; call once per worker process.</summary>
    public static void Install()
    {
        Console.SetOut(TextWriter.Synchronized(new TaskOutputCapture(Console.Out, isError: false)));
        Console.SetError(TextWriter.Synchronized(new TaskOutputCapture(Console.Error, isError: true)));
    }

    /// <summary>Starts capturing for the current flow (a task).</summary>
    public static void Begin(Sink sink, Rpc.Transport.FramedConnection? caller = null) => s_current.Value = new Capture(sink, caller);

    /// <summary>The connection the running task's output streams to (its submitter), if any: where nested output goes too.</summary>
    public static Rpc.Transport.FramedConnection? CurrentCaller => s_current.Value?.Caller;

    /// <summary>Starts capturing for the current flow, streaming whole lines to <paramref name="caller"/> as TaskOutput frames.</summary>
    public static void BeginStreamingTo(Rpc.Transport.FramedConnection? caller, string taskName, string taskId, string nodeIpAddress) =>
        Begin((text, isError) => caller?.Notify(Rpc.Transport.FramedMethods.TaskOutput, Google.Protobuf.MessageExtensions.ToByteArray(new Rpc.Protocol.TaskOutput
        {
            TaskName = taskName,
            TaskId = taskId,
            Pid = Environment.ProcessId,
            NodeIpAddress = nodeIpAddress,
            IsStderr = isError,
            Text = text,
        })), caller);

    /// <summary>Sends what is left of an unfinished line and stops capturing.</summary>
    public static void End()
    {
        if (s_current.Value is { } capture)
        {
            foreach (var (buffer, error) in new[] { (capture.Out, false), (capture.Error, true) })
            {
                string rest;
                lock (buffer)
                {
                    rest = buffer.ToString();
                    buffer.Clear();
                }
                if (rest.Length > 0) capture.Sink(rest, error);
            }
        }
        s_current.Value = null;
    }

    public override void Write(char value) => Write(value.ToString());

    public override void Write(char[] buffer, int index, int count) => Write(new string(buffer, index, count));

    public override void Write(string? value)
    {
        if (value is null) return;
        if (s_current.Value is not { } capture)
        {
            log.Write(value);
            return;
        }
        var buffer = isError ? capture.Error : capture.Out;
        string? lines = null;
        lock (buffer)
        {
            buffer.Append(value);
            var end = buffer.ToString().LastIndexOf('\n');
            if (end >= 0)
            {
                lines = buffer.ToString(0, end);
                buffer.Remove(0, end + 1);
            }
        }
        if (lines is not null) capture.Sink(lines.Replace("\r", "", StringComparison.Ordinal), isError);
    }

    public override void Flush() => log.Flush();
}
