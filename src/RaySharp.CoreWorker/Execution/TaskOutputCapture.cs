using System.Text;

namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// Console.Out and Console.Error of a worker process. What a task writes (per async flow, so it follows the task across
/// awaits) is handed, a whole line at a time, to that task's sink, which streams it to the task's submitter while the
/// task runs; anything written outside a task goes to the worker's log.
/// </summary>
internal sealed class TaskOutputCapture(TextWriter log, bool isError) : TextWriter
{
    /// <summary>A flow's captured output: streamed to the submitter as TaskOutput frames, a whole line at a time.</summary>
    internal sealed class Capture(Rpc.Transport.FramedConnection? caller, string taskName, string taskId, string nodeIpAddress)
    {
        public Rpc.Transport.FramedConnection? Caller { get; } = caller;
        // Made on the first write: most tasks print nothing.
        private StringBuilder? _out;
        private StringBuilder? _error;

        public StringBuilder Buffer(bool isError) =>
            isError ? LazyInitializer.EnsureInitialized(ref _error) : LazyInitializer.EnsureInitialized(ref _out);

        public StringBuilder? Written(bool isError) => isError ? _error : _out;

        public void Send(string text, bool isError) => Caller?.Notify(Rpc.Transport.FramedMethods.TaskOutput, Google.Protobuf.MessageExtensions.ToByteArray(new Rpc.Protocol.TaskOutput
        {
            TaskName = taskName,
            TaskId = taskId,
            Pid = Environment.ProcessId,
            NodeIpAddress = nodeIpAddress,
            IsStderr = isError,
            Text = text,
        }));
    }

    public override Encoding Encoding => log.Encoding;

    /// <summary>
    /// Routes Console.Out and Console.Error through capture, until the result is disposed (the console is the
    /// process's, so its worker runtime installs this once and owns the result).
    /// </summary>
    public static IDisposable Install()
    {
        var (stdout, stderr) = (Console.Out, Console.Error);
        Console.SetOut(TextWriter.Synchronized(new TaskOutputCapture(stdout, isError: false)));
        Console.SetError(TextWriter.Synchronized(new TaskOutputCapture(stderr, isError: true)));
        return new Restore(stdout, stderr);
    }

    private sealed class Restore(TextWriter stdout, TextWriter stderr) : IDisposable
    {
        public void Dispose()
        {
            Console.SetOut(stdout);
            Console.SetError(stderr);
        }
    }

    private static Capture? Current => RunningTask.Current?.Output;

    /// <summary>The connection the running task's output streams to (its submitter), if any: where nested output goes too.</summary>
    public static Rpc.Transport.FramedConnection? CurrentCaller => Current?.Caller;

    /// <summary>Starts capturing the output of <paramref name="running"/> (this flow's task), streaming whole lines to <paramref name="caller"/>.</summary>
    public static void BeginStreamingTo(RunningTask running, Rpc.Transport.FramedConnection? caller, string taskName, string taskId, string nodeIpAddress) =>
        running.Output = new Capture(caller, taskName, taskId, nodeIpAddress);

    /// <summary>Sends what is left of an unfinished line and stops capturing.</summary>
    public static void End(RunningTask running)
    {
        if (running.Output is not { } capture) return;
        running.Output = null;
        foreach (var error in (ReadOnlySpan<bool>)[false, true])
        {
            if (capture.Written(error) is not { } buffer) continue;
            string rest;
            lock (buffer)
            {
                rest = buffer.ToString();
                buffer.Clear();
            }
            if (rest.Length > 0) capture.Send(rest, error);
        }
    }

    public override void Write(char value) => Write(value.ToString());

    public override void Write(char[] buffer, int index, int count) => Write(new string(buffer, index, count));

    public override void Write(string? value)
    {
        if (value is null) return;
        if (Current is not { } capture)
        {
            log.Write(value);
            return;
        }
        var buffer = capture.Buffer(isError);
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
        if (lines is not null) capture.Send(lines.Replace("\r", "", StringComparison.Ordinal), isError);
    }

    public override void Flush() => log.Flush();
}
