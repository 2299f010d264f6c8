/// <summary>
/// How a scenario coordinates with its test, through files in <c>TESTDRIVER_SIGNAL_DIR</c>: the driver writes one when
/// it reaches the point where the test acts, and waits for the test's file saying it is done.
/// </summary>
internal static class TestSignals
{
    private static string SignalDir => Environment.GetEnvironmentVariable("TESTDRIVER_SIGNAL_DIR")
        ?? throw new InvalidOperationException("TESTDRIVER_SIGNAL_DIR is not set");

    public static void Signal(string name) => File.WriteAllText(Path.Combine(SignalDir, name), "");

    public static bool IsSignalled(string name) => File.Exists(Path.Combine(SignalDir, name));

    public static void WaitFor(string name)
    {
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (!IsSignalled(name))
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"the test never wrote {name}");
            Thread.Sleep(50);
        }
    }
}
